"""A hard reset of the VM (QMP ``system_reset``, as a host crash or a hard reboot), the last VM test.

Before it, the controller's uploads change what the config drive gave (agent config, server
certificate) and the amphora serves an HTTP load balancer and the UDP listener through its
hot-plugged ports. After it, without any call from the controller, the agent answers with the
rotated certificate and config, the ports are still attached and plugged again from the agent's
stored definitions, and every load balancer serves again.

The HTTP load balancer is the controller's single-http one on this amphora's VIP, not the
multi-listener one: its TLS keys live in memory (``base_cert_dir`` is a tmpfs, as the existing
image's certs-ramfs), so an amphora with a TERMINATED_HTTPS listener cannot serve it after a
reboot; its heartbeat then lacks that listener and the controller fails the amphora over.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import configdrive, namespaces, tenant, vm
from lab.amphora_vm import AMPHORA_ID, BOOT_TIMEOUT, Amphora, wait_for_agent
from tests.integration.helpers import get
from tests.vm.conftest import Ports

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SINGLE_LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"  # the fixture's single-http load balancer
MULTI_LB = "1255f924-18da-44a0-aad7-23512f2c0594"
UDP_LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"
FIXTURE_VIP = "198.51.100.10"  # single-http's VIP in the fixtures
ROTATED_KEY = "fixture-heartbeat-key-rotated"  # amphora-agent-updated.conf's heartbeat_key
SERVE_AFTER_AGENT = 5.0  # target: from the agent answering to every load balancer serving


def server_fingerprint(amp: Amphora) -> str:
    """SHA-256 of the certificate the agent presents (with our client certificate)."""
    ctx = ssl.create_default_context(cafile=str(amp.controller.workdir / "ca.pem"))
    ctx.load_cert_chain(str(amp.controller.workdir / "client.pem"))
    with (
        socket.create_connection((amp.address, 9443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=AMPHORA_ID) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def serving(
    amphora: Amphora, ports: Ports, tenant_net: tenant.TenantNetworks, fixtures_dir: Path
) -> Iterator[bytes]:
    """single-http on the VIP (the multi-listener LB deleted first) and the UDP listener, both serving."""
    members = namespaces.Backends()
    udp_members = [
        tenant.UdpMember(tenant_net.member, address, 53) for address in ("203.0.113.61", "203.0.113.62")
    ]
    try:
        for n in (11, 12):
            members.start(f"203.0.113.{n}", 80, f"single-{n}", netns=tenant_net.member.name)
        config = (fixtures_dir / "haproxy" / "single-http.cfg").read_text().replace(FIXTURE_VIP, tenant.VIP)
        with amphora.controller.client(amphora.address) as api:
            api.request("DELETE", f"/1.0/listeners/{MULTI_LB}")  # absent when run alone: 200 as well
            put = api.request(
                "PUT", f"/1.0/loadbalancer/{AMPHORA_ID}/{SINGLE_LB}/haproxy", content=config.encode()
            )
            assert put.status_code == 202, put.text
            assert api.request("PUT", f"/1.0/loadbalancer/{SINGLE_LB}/reload").status_code == 202
        client = tenant_net.client
        assert namespaces.wait_until(lambda: http_answers(client), 60, interval=0.5), (
            "single-http never served"
        )
        assert namespaces.wait_until(lambda: udp_answers(client), 60, interval=0.5), "UDP never served"
        yield config.encode()
    finally:
        members.stop()
        for member in udp_members:
            member.close()


def http_answers(client: namespaces.Peer) -> bool:
    """Whether an HTTP request through the VIP is answered by a single-http member."""
    try:
        return client.call(lambda: get(tenant.VIP, timeout=1.0))[1].startswith(b"single-")
    except OSError:
        return False


def udp_answers(client: namespaces.Peer) -> bool:
    """Whether a UDP request through the VIP is answered by a member."""
    return client.call(lambda: tenant.udp_pairs(tenant.VIP, 53, 1, timeout=0.5)).lost == 0


def agent_answers(amp: Amphora) -> bool:
    """Whether the agent answers ``GET /1.0/info`` over mutual TLS."""
    try:
        with amp.controller.client(amp.address) as api:
            api.info()
    except Exception:
        return False
    return True


def first_success(probes: dict[str, Callable[[], bool]], timeout: float) -> dict[str, float]:
    """Run each probe in a loop of its own until it first succeeds; seconds from now, per probe."""
    started = time.monotonic()
    found: dict[str, float] = {}

    def loop(name: str, probe: Callable[[], bool]) -> None:
        while time.monotonic() - started < timeout:
            if probe():
                found[name] = time.monotonic() - started
                return
            time.sleep(0.2)

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in probes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return found


def test_after_a_reset_everything_serves_again_without_the_controller(
    amphora: Amphora, ports: Ports, serving: bytes, tenant_net: tenant.TenantNetworks, fixtures_dir: Path
) -> None:
    """Uploads survive; ports come back plugged; HTTP and UDP serve within 5 s of the agent answering."""
    controller = amphora.controller
    updated = (fixtures_dir / "agent" / "amphora-agent-updated.conf").read_text()
    new_config = configdrive.agent_config(updated, [f"{vm.CALLER_ADDRESS}:5555"])
    with controller.client(amphora.address) as api:
        api.put_agent_config(new_config)
        api.rotate_server_certificate(controller.ca.issue(AMPHORA_ID, server=True).bundle)
    rotated = server_fingerprint(amphora)
    config_hash = amphora.guest("sha256sum", configdrive.AGENT_CONF).split()[0]
    assert config_hash == hashlib.sha256(new_config.encode()).hexdigest()

    amphora.vm.reset()
    client = tenant_net.client
    times = first_success(
        {
            "agent": lambda: agent_answers(amphora),
            "http": lambda: http_answers(client),
            "udp": lambda: udp_answers(client),
        },
        BOOT_TIMEOUT,
    )
    print(f"after system_reset: {', '.join(f'{k} {v:.1f} s' for k, v in sorted(times.items()))}")
    assert set(times) == {"agent", "http", "udp"}, times
    assert max(times["http"], times["udp"]) - times["agent"] <= SERVE_AFTER_AGENT, times

    wait_for_agent(controller, amphora.address, BOOT_TIMEOUT)
    assert server_fingerprint(amphora) == rotated
    assert amphora.guest("sha256sum", configdrive.AGENT_CONF).split()[0] == config_hash
    with controller.client(amphora.address) as api:
        assert api.get_haproxy_config(SINGLE_LB).encode() == serving
        assert api.interface(ports.vrrp_ip) == "eth1"
        assert api.interface(ports.member_ip) == "eth2"
        assert {row.uuid: row.status for row in api.listeners()} == {
            "922d8f42-59a5-4a50-b10d-9632277e363e": "ACTIVE",  # single-http's listener
            UDP_LISTENER: "ACTIVE",
        }
    links = amphora.guest("ip", "-n", "amphora-haproxy", "-br", "link")
    assert {line.split()[0]: line.split()[2] for line in links.splitlines()[1:]} == {
        "eth1": ports.vip_mac,
        "eth2": ports.member_mac,
    }
    journal = amphora.guest("journalctl", "-b", "-u", "amphora-config-drive", "-o", "cat")
    assert "wrote nothing (all current)" in journal
    state = json.loads(amphora.guest("cat", "/var/lib/amphora-image/config-drive.json"))
    assert sorted(state) == sorted(amphora.files)
    beat = controller.heartbeats(1, key=ROTATED_KEY)[0]
    assert set(beat["listeners"]) == {"922d8f42-59a5-4a50-b10d-9632277e363e", UDP_LISTENER}

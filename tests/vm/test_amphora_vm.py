"""The amphora image as Nova boots it: config drive, systemd, DHCP, mutual TLS, heartbeats, logs, reset."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from amphora_agent.client import AgentAPIError
from amphora_agent.health import codec
from lab import configdrive, vm
from tests.vm.conftest import AMPHORA_ID, BOOT_TIMEOUT, Amphora, wait_for_agent

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
SINGLE_LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"  # the fixture's single-http load balancer


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


def test_agent_answers_mutual_tls_on_the_dhcp_address(amphora: Amphora) -> None:
    """The agent serves /info over mutual TLS on the address dnsmasq leased to the management NIC."""
    assert amphora.address.startswith("198.51.100.")
    with amphora.controller.client(amphora.address) as api:
        assert api.info().get("uuid") in (AMPHORA_ID, None)


def test_a_client_without_a_certificate_is_refused(amphora: Amphora) -> None:
    """No client certificate: the TLS handshake fails before any handler runs."""
    ctx = ssl.create_default_context(cafile=str(amphora.controller.workdir / "ca.pem"))
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError)),
        socket.create_connection((amphora.address, 9443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=AMPHORA_ID) as tls,
    ):
        tls.sendall(b"GET /1.0/info HTTP/1.1\r\nHost: amphora\r\n\r\n")  # TLS 1.3: refused on read
        assert tls.recv(100) == b"", "the agent answered a client without a certificate"
        raise ConnectionResetError("closed without an answer")


def test_info_reports_the_image_package_versions(amphora: Amphora) -> None:
    """/info names the haproxy, keepalived and ipvsadm packages installed in the image."""
    with amphora.controller.client(amphora.address) as api:
        info = api.info()
    for package in ("haproxy", "keepalived", "ipvsadm"):
        installed = amphora.guest("dpkg-query", "-W", "-f=${Version}", package).split(":", 1)[-1]
        assert info[f"{package}_version"] == installed  # type: ignore[literal-required]


def test_config_drive_files_have_their_modes_and_certs_are_in_memory(amphora: Amphora) -> None:
    """The four files are in place, keys and the agent config 0600; base_cert_dir is a 0700 tmpfs."""
    modes = amphora.guest("stat", "-c", "%n %a %U", *amphora.files).splitlines()
    assert modes == [
        f"{configdrive.SERVER_PEM} 600 root",
        f"{configdrive.CLIENT_CA} 600 root",
        f"{configdrive.AGENT_CONF} 600 root",
        f"{configdrive.RSYSLOG_CONF} 644 root",
    ]
    assert amphora.guest("cat", configdrive.RSYSLOG_CONF) == amphora.files[configdrive.RSYSLOG_CONF]
    mount = amphora.guest("findmnt", "-n", "-o", "FSTYPE,OPTIONS", "/var/lib/octavia/certs")
    assert mount.startswith("tmpfs") and "mode=700" in mount
    assert amphora.guest("systemctl", "is-enabled", "haproxy", "keepalived", check=False).split() == [
        "masked",
        "masked",
    ]


def test_ipvs_and_the_load_balancer_kernel_settings_are_there(amphora: Amphora) -> None:
    """ip_vs loads (UDP/SCTP listeners) and the sysctl settings of the existing images apply."""
    amphora.guest("modprobe", "ip_vs")
    assert "IP Virtual Server" in amphora.guest("ipvsadm", "-L", "-n")
    assert amphora.guest("sysctl", "-n", "net.ipv4.ip_nonlocal_bind").strip() == "1"
    assert amphora.guest("sysctl", "-n", "net.core.somaxconn").strip() == "65534"


def test_heartbeats_reach_the_health_manager_and_decode(amphora: Amphora) -> None:
    """The agent's heartbeats arrive at the controller_ip_port_list target and pass the decoder."""
    datagrams = amphora.controller.receive("heartbeat", timeout=30)
    assert datagrams, "no heartbeat within 30 s"
    message = codec.decode(datagrams[-1], "fixture-heartbeat-key")
    assert message["id"] == AMPHORA_ID


def test_administrative_logs_reach_the_syslog_target(amphora: Amphora) -> None:
    """rsyslog forwards the agent's own log lines (local1) to the admin target of 10-rsyslog.conf."""
    amphora.guest("logger", "-p", "local1.info", "-t", "amphora-agent", "admin-log-probe")
    lines = amphora.controller.receive("admin", timeout=30, until=b"admin-log-probe")
    assert any(b"amphora-agent" in line for line in lines), lines[-5:]
    assert any(b"admin-log-probe" in line for line in lines)


def test_a_hot_plugged_nic_is_left_down_for_the_agent(amphora: Amphora) -> None:
    """A NIC attached after boot (QMP, as Nova's port attach) gets no address and stays down."""
    tap = amphora.vm.lab.tap("tap-hotplug")
    amphora.vm.qmp.execute("netdev_add", type="tap", id="hot1", ifname=tap, script="no", downscript="no")
    amphora.vm.qmp.execute(
        "device_add", driver="virtio-net-pci", netdev="hot1", mac="fa:16:3e:00:00:99", id="nic1"
    )
    links = vm.wait_for(
        "the hot-plugged NIC in the guest",
        lambda: next(
            (line for line in amphora.guest("ip", "-br", "link").splitlines() if "fa:16:3e:00:00:99" in line),
            None,
        ),
        30,
        interval=0.5,
    )
    time.sleep(2)  # give networkd the chance to (wrongly) configure it
    name = links.split()[0]
    assert "DOWN" in amphora.guest("ip", "-br", "link", "show", name)
    assert "inet" not in amphora.guest("ip", "address", "show", name)


def test_uploads_then_reset_keep_certificate_and_config(amphora: Amphora, fixtures_dir: Path) -> None:
    """PUT config, certificate and a haproxy config; after system_reset the agent has the new ones."""
    controller = amphora.controller
    updated = (fixtures_dir / "agent" / "amphora-agent-updated.conf").read_text()
    new_config = configdrive.agent_config(updated, [f"{vm.CALLER_ADDRESS}:5555"])
    new_cert = controller.ca.issue(AMPHORA_ID, server=True).bundle
    haproxy_cfg = (fixtures_dir / "haproxy" / "single-http.cfg").read_bytes()
    with controller.client(amphora.address) as api:
        api.put_agent_config(new_config)
        api.rotate_server_certificate(new_cert)
        api.put_haproxy_config(SINGLE_LB, haproxy_cfg)
        assert api.get_haproxy_config(SINGLE_LB).encode() == haproxy_cfg
        with pytest.raises(AgentAPIError) as refused:
            api.put_haproxy_config(SINGLE_LB, b"global\n    nonsense-keyword\n")
        assert refused.value.status == 400
    rotated = server_fingerprint(amphora)
    config_hash = amphora.guest("sha256sum", configdrive.AGENT_CONF).split()[0]
    assert config_hash == hashlib.sha256(new_config.encode()).hexdigest()

    amphora.vm.reset()
    time.sleep(5)  # the old agent must not be the one answering below
    wait_for_agent(controller, amphora.address, BOOT_TIMEOUT)
    assert server_fingerprint(amphora) == rotated
    assert amphora.guest("sha256sum", configdrive.AGENT_CONF).split()[0] == config_hash
    with controller.client(amphora.address) as api:
        assert api.get_haproxy_config(SINGLE_LB).encode() == haproxy_cfg
    journal = amphora.guest("journalctl", "-b", "-u", "amphora-config-drive", "-o", "cat")
    assert "wrote nothing (all current)" in journal
    state = json.loads(amphora.guest("cat", "/var/lib/amphora-image/config-drive.json"))
    assert sorted(state) == sorted(amphora.files)

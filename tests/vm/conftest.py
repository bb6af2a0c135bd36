"""The amphora image booted under qemu: one test build per run, real everything.

The image comes from ``image/build.sh --test`` (skipped when its input hash is current: ``make
test`` runs it before pytest). The test plays the controller: it renders the four config-drive
files as the controller does (the agent config is the fixture's, with the health manager moved
into the test's namespace), listens for heartbeats and forwarded syslog, and talks mutual TLS to
the agent on the address the VM got by DHCP. It plays Nova too: ports are attached to the running
VM with QMP, as Nova attaches them.

Boots are what cost (20-60 s each under TCG), so a session boots twice: once with the
``user_data`` form of the config drive (its module runs first, alone), then one VM that every
other module shares, in the order of ``VM_MODULES``: the image itself, ports, listeners, UDP/SCTP,
and the reset last.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amphora_agent.client import AgentClient, Connection, RetryPolicy
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.health import codec
from lab import configdrive, tenant, vm

REPO = Path(__file__).resolve().parents[2]
AMPHORA_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"  # the fixture config's amphora_id
HEARTBEAT_PORT = 5555
ADMIN_LOG_PORT = 10514
TENANT_LOG_PORT = 20514
HEARTBEAT_KEY = "fixture-heartbeat-key"  # the fixture config's heartbeat_key
BOOT_TIMEOUT = 240.0  # TCG on a busy 2-core machine; about 25 s when idle
# the session's VM modules in the order they must run: its own boot first, then the shared VM
VM_MODULES = (
    "test_user_data_vm",
    "test_amphora_vm",
    "test_vm_ports",
    "test_vm_listeners",
    "test_vm_l4",
    "test_vm_reboot",
)
# member servers on the tenant side: multi-listener (web, TCP, re-encrypting pool), single-http, UDP
MEMBERS = ("203.0.113.21", "203.0.113.22", "203.0.113.31", "203.0.113.41", "203.0.113.42",
           "203.0.113.11", "203.0.113.12", "203.0.113.61", "203.0.113.62")  # fmt: skip

pytestmark = pytest.mark.vm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests run in ``VM_MODULES`` order; they need root (namespaces, tap devices, image build)."""
    slots = [n for n, item in enumerate(items) if item.path.stem in VM_MODULES]
    ordered = sorted((items[n] for n in slots), key=lambda item: VM_MODULES.index(item.path.stem))
    for n, item in zip(slots, ordered, strict=True):
        items[n] = item
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for the image build, network namespaces and tap devices")
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vm_image() -> Path:
    """The test build of the image (with qemu-guest-agent), current by its input hash.

    ``make test`` builds it before pytest: the suite runs in a namespace without a network.
    """
    done = subprocess.run(
        [str(REPO / "image" / "build.sh"), "--test", "--print-path", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(done.stderr[-4000:])
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class Controller:
    """The controller's side: certificates it provisions and what it receives from the amphora."""

    workdir: Path
    ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority("octavia test CA"))
    sockets: dict[str, socket.socket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.workdir / "ca.pem").write_bytes(self.ca.cert_pem)
        (self.workdir / "client.pem").write_bytes(self.ca.issue("controller", server=False).bundle)

    def listen(self) -> None:
        """UDP sockets for heartbeats and both syslog targets, bound before the VM boots."""
        for name, port in (
            ("heartbeat", HEARTBEAT_PORT),
            ("admin", ADMIN_LOG_PORT),
            ("tenant", TENANT_LOG_PORT),
        ):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((vm.CALLER_ADDRESS, port))
            self.sockets[name] = sock

    def drain(self, name: str) -> int:
        """Drop what waits on one socket (sent before now); how many datagrams."""
        sock = self.sockets[name]
        sock.setblocking(False)
        dropped = 0
        try:
            while True:
                sock.recv(65535)
                dropped += 1
        except BlockingIOError:
            return dropped
        finally:
            sock.setblocking(True)

    def heartbeats(
        self, count: int, key: str = HEARTBEAT_KEY, timeout: float = 60.0, fresh: bool = True
    ) -> list[dict[str, Any]]:
        """The next ``count`` heartbeats, decoded with ``key``: sent after this call when ``fresh``."""
        if fresh:
            self.drain("heartbeat")
        beats: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(beats) < count:
            got = self.receive("heartbeat", max(0.1, deadline - time.monotonic()))
            if not got:
                raise TimeoutError(f"{len(beats)} of {count} heartbeats within {timeout:.0f} s")
            beats.append(dict(codec.decode(got[0], key)))
        return beats

    def receive(self, name: str, timeout: float, until: bytes = b"") -> list[bytes]:
        """Datagrams on one socket until one contains ``until`` (or the first one) or ``timeout``."""
        sock = self.sockets[name]
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            got.append(data)
            if until in data:
                break
        return got

    def drive_files(self, fixtures: Path) -> dict[str, str]:
        """The four files ``ComputeCreate`` puts on the config drive, in its order."""
        agent_conf = (fixtures / "agent" / "amphora-agent.conf").read_text()
        target = [configdrive.LogTarget(vm.CALLER_ADDRESS, ADMIN_LOG_PORT)]
        tenant = [configdrive.LogTarget(vm.CALLER_ADDRESS, TENANT_LOG_PORT)]
        return {
            configdrive.SERVER_PEM: self.ca.issue(AMPHORA_ID, server=True).bundle.decode(),
            configdrive.CLIENT_CA: self.ca.cert_pem.decode(),
            configdrive.AGENT_CONF: configdrive.agent_config(
                agent_conf, [f"{vm.CALLER_ADDRESS}:{HEARTBEAT_PORT}"]
            ),
            configdrive.RSYSLOG_CONF: configdrive.render_rsyslog(target, tenant),
        }

    def client(self, address: str, with_cert: bool = True) -> AgentClient:
        """The project's client, as the controller connects: mTLS, the amphora id as the name."""
        conn = Connection(
            url=f"https://{address}:9443",
            amphora_id=AMPHORA_ID,
            ca=self.workdir / "ca.pem",
            client_cert=self.workdir / "client.pem" if with_cert else None,
            connect_timeout=5.0,
            read_timeout=60.0,
            retry=RetryPolicy(attempts=1, interval=0.0),
        )
        return AgentClient(conn)

    def close(self) -> None:
        """Close the sockets."""
        for sock in self.sockets.values():
            sock.close()


@dataclass
class Amphora:
    """A booted VM, its management address and the files its config drive carried."""

    vm: vm.Vm
    address: str
    files: dict[str, str]
    controller: Controller

    def guest(self, *argv: str, check: bool = True) -> str:
        """Run a command in the guest (qemu-guest-agent); its output, failing the test on non-zero."""
        code, out = self.vm.guest().run(list(argv), timeout=60)
        assert code == 0 or not check, f"{argv} exited {code}: {out}"
        return out


def wait_for_agent(controller: Controller, address: str, timeout: float) -> None:
    """Until the agent answers ``GET /1.0/info`` over mutual TLS."""

    def answers() -> bool:
        try:
            with controller.client(address) as api:
                api.info()
        except Exception:
            return False
        return True

    vm.wait_for("the agent over mTLS", answers, timeout, interval=0.5)


@contextlib.contextmanager
def boot_amphora(
    net: vm.VmLab, image: Path, controller: Controller, fixtures: Path, *, user_data_form: bool, name: str
) -> Iterator[Amphora]:
    """Boot the image with a config drive in one form; the VM is stopped by PID afterwards."""
    files = controller.drive_files(fixtures)
    tree = configdrive.write_tree(
        net.workdir / f"drive-{name}", files, AMPHORA_ID, user_data_form=user_data_form
    )
    iso = configdrive.make_iso(tree, net.workdir / f"drive-{name}.iso")
    mac = "fa:16:3e:00:00:02" if user_data_form else "fa:16:3e:00:00:01"
    with vm.booted(net, image, iso, mac=mac, name=name) as machine:
        try:
            address = machine.address(BOOT_TIMEOUT)
            wait_for_agent(controller, address, BOOT_TIMEOUT)
        except TimeoutError as exc:
            pytest.fail(f"{exc}; serial console:\n{machine.console()[-3000:]}")
        yield Amphora(machine, address, files, controller)


@pytest.fixture(scope="session")
def lab_net() -> Iterator[tuple[vm.VmLab, Controller]]:
    """The management network (namespace, bridge, dnsmasq) and the controller's sockets in ours."""
    with tempfile.TemporaryDirectory(prefix="ampvm") as tmp, vm.lab(Path(tmp)) as net:
        controller = Controller(Path(tmp))
        controller.listen()
        try:
            yield net, controller
        finally:
            controller.close()


@pytest.fixture(scope="session")
def amphora(vm_image: Path, lab_net: tuple[vm.VmLab, Controller], fixtures_dir: Path) -> Iterator[Amphora]:
    """The session's VM, booted with the ``files`` form of the config drive, shared by the modules."""
    net, controller = lab_net
    with boot_amphora(net, vm_image, controller, fixtures_dir, user_data_form=False, name="files") as amp:
        for name in controller.sockets:  # what an earlier VM sent (same amphora id) is not this one's
            controller.drain(name)
        yield amp


@pytest.fixture(scope="session")
def tenant_net(lab_net: tuple[vm.VmLab, Controller]) -> Iterator[tenant.TenantNetworks]:
    """The VIP and member networks (bridges in the lab) with a client and a member namespace."""
    networks = tenant.TenantNetworks(lab_net[0], MEMBERS)
    try:
        yield networks.create()
    finally:
        networks.destroy()


@dataclass(frozen=True)
class Ports:
    """The VIP and member ports attached to the VM and plugged with the controller's bodies."""

    vip_mac: str
    member_mac: str
    vrrp_ip: str
    member_ip: str
    vip_reply: tuple[int, dict[str, Any]]
    network_reply: tuple[int, dict[str, Any]]
    attach_seconds: float


def request_body(fixtures: Path, name: str) -> bytes:
    """A JSON request body exactly as the controller put it on the wire."""
    return (fixtures / "requests" / name).read_bytes()


def nic_in_guest(amp: Amphora, mac: str) -> bool:
    """Whether the guest lists a NIC with ``mac`` in its own namespace (looked up by the guest agent)."""
    return mac in amp.guest("ip", "-br", "link")


@pytest.fixture(scope="session")
def ports(amphora: Amphora, tenant_net: tenant.TenantNetworks, fixtures_dir: Path) -> Ports:
    """Nova attaches the VIP and the member port; the controller plugs them (POST plug vip / network)."""
    vip_body = request_body(fixtures_dir, "plug-vip-active-standby-amp-a.json")
    network_body = request_body(fixtures_dir, "plug-network.json")
    vip, network = json.loads(vip_body), json.loads(network_body)
    started = time.monotonic()
    amphora.vm.hotplug(vip["mac_address"], tenant.VIP_BRIDGE, "port-vip")
    amphora.vm.hotplug(network["mac_address"], tenant.MEMBER_BRIDGE, "port-member")
    vm.wait_for(
        "both ports in the guest",
        lambda: all(nic_in_guest(amphora, port["mac_address"]) for port in (vip, network)),
        60,
        interval=0.3,
    )
    attached = time.monotonic() - started
    with amphora.controller.client(amphora.address) as api:
        plugged_vip = api.request("POST", f"/1.0/plug/vip/{tenant.VIP}", content=vip_body)
        plugged = api.request("POST", "/1.0/plug/network", content=network_body)
    return Ports(
        vip_mac=vip["mac_address"],
        member_mac=network["mac_address"],
        vrrp_ip=vip["vrrp_ip"],
        member_ip=network["fixed_ips"][0]["ip_address"],
        vip_reply=(plugged_vip.status_code, plugged_vip.json()),
        network_reply=(plugged.status_code, plugged.json()),
        attach_seconds=attached,
    )

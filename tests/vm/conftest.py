"""The amphora image booted under qemu: one test build per run, one VM per module, real everything.

The image comes from ``image/build.sh --test`` (skipped when its input hash is current: ``make
test`` runs it before pytest). The test plays the controller: it renders the four config-drive
files as the controller does (the agent config is the fixture's, with the health manager moved
into the test's namespace), listens for heartbeats and forwarded syslog, and talks mutual TLS to
the agent on the address the VM got by DHCP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amphora_agent.client import AgentClient, Connection, RetryPolicy
from amphora_agent.devcerts import CertificateAuthority
from lab import configdrive, vm

REPO = Path(__file__).resolve().parents[2]
AMPHORA_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"  # the fixture config's amphora_id
HEARTBEAT_PORT = 5555
ADMIN_LOG_PORT = 10514
TENANT_LOG_PORT = 20514
BOOT_TIMEOUT = 240.0  # TCG on a busy 2-core machine; about 25 s when idle

pytestmark = pytest.mark.vm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests need root (namespaces, tap devices, image build): skip them, with the reason, without."""
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

    def receive(self, name: str, timeout: float, until: bytes = b"") -> list[bytes]:
        """Datagrams on one socket until one contains ``until`` (or the first one) or ``timeout``."""
        import time

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


@pytest.fixture(scope="module")
def lab_net() -> Iterator[tuple[vm.VmLab, Controller]]:
    """The management network (namespace, bridge, dnsmasq) and the controller's sockets in ours."""
    with tempfile.TemporaryDirectory(prefix="ampvm") as tmp, vm.lab(Path(tmp)) as net:
        controller = Controller(Path(tmp))
        controller.listen()
        try:
            yield net, controller
        finally:
            controller.close()


@pytest.fixture(scope="module")
def amphora(vm_image: Path, lab_net: tuple[vm.VmLab, Controller], fixtures_dir: Path) -> Iterator[Amphora]:
    """One VM for the module, booted with the ``files`` form of the config drive."""
    net, controller = lab_net
    with boot_amphora(net, vm_image, controller, fixtures_dir, user_data_form=False, name="files") as amp:
        yield amp

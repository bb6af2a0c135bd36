"""The controller's side of an amphora VM: what it provisions, receives and sends.

It renders the four config-drive files as the controller does (the agent config is the fixture's,
with the health manager moved into the caller's namespace), listens for heartbeats and forwarded
syslog on the caller's end of the lab network, and talks mutual TLS to the agent on the address the
VM got by DHCP. Used by the VM tests and the VM benchmarks.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amphora_agent.client import AgentClient, Connection, RetryPolicy
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.health import codec
from lab import configdrive, vm

AMPHORA_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"  # the fixture config's amphora_id (amp-s)
HEARTBEAT_KEY = "fixture-heartbeat-key"  # the fixture config's heartbeat_key
HEARTBEAT_PORT = 5555
ADMIN_LOG_PORT = 10514
TENANT_LOG_PORT = 20514
BOOT_TIMEOUT = 240.0  # TCG on a busy 2-core machine; about 25 s when idle


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

    def drive_files(
        self, fixtures: Path, amphora_id: str = AMPHORA_ID, topology: str = "SINGLE"
    ) -> dict[str, str]:
        """The four files ``ComputeCreate`` puts on the config drive, in its order.

        The agent config is the fixture's (amp-s, SINGLE); another amphora's has its own id and the
        load balancer's topology, as the controller renders it for that amphora.
        """
        agent_conf = (fixtures / "agent" / "amphora-agent.conf").read_text()
        agent_conf = agent_conf.replace(f"amphora_id = {AMPHORA_ID}", f"amphora_id = {amphora_id}")
        agent_conf = agent_conf.replace(
            "loadbalancer_topology = SINGLE", f"loadbalancer_topology = {topology}"
        )
        target = [configdrive.LogTarget(vm.CALLER_ADDRESS, ADMIN_LOG_PORT)]
        tenant = [configdrive.LogTarget(vm.CALLER_ADDRESS, TENANT_LOG_PORT)]
        return {
            configdrive.SERVER_PEM: self.ca.issue(amphora_id, server=True).bundle.decode(),
            configdrive.CLIENT_CA: self.ca.cert_pem.decode(),
            configdrive.AGENT_CONF: configdrive.agent_config(
                agent_conf, [f"{vm.CALLER_ADDRESS}:{HEARTBEAT_PORT}"]
            ),
            configdrive.RSYSLOG_CONF: configdrive.render_rsyslog(target, tenant),
        }

    def client(self, address: str, with_cert: bool = True, amphora_id: str = AMPHORA_ID) -> AgentClient:
        """The project's client, as the controller connects: mTLS, the amphora id as the name."""
        conn = Connection(
            url=f"https://{address}:9443",
            amphora_id=amphora_id,
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
    amphora_id: str = AMPHORA_ID

    def guest(self, *argv: str, check: bool = True) -> str:
        """Run a command in the guest (qemu-guest-agent); its output (RuntimeError on non-zero)."""
        code, out = self.vm.guest().run(list(argv), timeout=60)
        if code != 0 and check:
            raise RuntimeError(f"{argv} exited {code}: {out}")
        return out

    def client(self) -> AgentClient:
        """The controller's client for this amphora."""
        return self.controller.client(self.address, amphora_id=self.amphora_id)


def wait_for_agent(
    controller: Controller, address: str, timeout: float, amphora_id: str = AMPHORA_ID
) -> None:
    """Until the agent answers ``GET /1.0/info`` over mutual TLS."""

    def answers() -> bool:
        try:
            with controller.client(address, amphora_id=amphora_id) as api:
                api.info()
        except Exception:
            return False
        return True

    vm.wait_for("the agent over mTLS", answers, timeout, interval=0.5)


def config_drive(
    net: vm.VmLab,
    controller: Controller,
    fixtures: Path,
    name: str,
    amphora_id: str = AMPHORA_ID,
    topology: str = "SINGLE",
    user_data_form: bool = False,
) -> tuple[Path, dict[str, str]]:
    """The amphora's config drive (an ISO in the lab's folder) and the files on it."""
    files = controller.drive_files(fixtures, amphora_id, topology)
    tree = configdrive.write_tree(
        net.workdir / f"drive-{name}", files, amphora_id, user_data_form=user_data_form
    )
    return configdrive.make_iso(tree, net.workdir / f"drive-{name}.iso"), files


def ready(
    machine: vm.Vm, controller: Controller, files: dict[str, str], amphora_id: str = AMPHORA_ID
) -> Amphora:
    """Wait for the started VM's DHCP lease and its agent; TimeoutError with the end of its console."""
    try:
        address = machine.address(BOOT_TIMEOUT)
        wait_for_agent(controller, address, BOOT_TIMEOUT, amphora_id)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; serial console:\n{machine.console()[-3000:]}") from exc
    return Amphora(machine, address, files, controller, amphora_id)


@contextlib.contextmanager
def boot_amphora(
    net: vm.VmLab,
    image: Path,
    controller: Controller,
    fixtures: Path,
    *,
    user_data_form: bool = False,
    name: str = "amp",
    mac: str = "fa:16:3e:00:00:01",
    amphora_id: str = AMPHORA_ID,
    topology: str = "SINGLE",
) -> Iterator[Amphora]:
    """Boot the image with a config drive in one form, until the agent answers; stopped by PID after."""
    iso, files = config_drive(net, controller, fixtures, name, amphora_id, topology, user_data_form)
    with vm.booted(net, image, iso, mac=mac, name=name) as machine:
        yield ready(machine, controller, files, amphora_id)

"""An amphora VM under qemu, on a management network of its own, for tests and benchmarks.

``VmLab`` makes a network namespace holding a bridge (``198.51.100.1/24``) with dnsmasq serving
DHCP on it, a tap device for the VM's management NIC, and a veth pair whose other end
(``198.51.100.2/24``) sits in the caller's namespace, where the test runs its clients, heartbeat
listener and syslog receiver. The caller must already be in a private network namespace (the
test suite moves itself into one): nothing here touches the host's interfaces. ``Vm`` boots an
image there with 1 GiB and 2 vCPUs (KVM only where it is a working one, TCG otherwise), a
Nova-format config drive on IDE, QMP and, for the test build, qemu-guest-agent. Every process
is stopped by PID and the namespace removed, also on an error or Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAB_ADDRESS = "198.51.100.1"  # the bridge: DHCP server and router of the management network
CALLER_ADDRESS = "198.51.100.2"  # the caller's end: controller side (heartbeats, syslog, client)
PREFIX = 24
DHCP_RANGE = ("198.51.100.100", "198.51.100.199")
LEASE_SECONDS = 3600
MEMORY_MIB = 1024
CPUS = 2
_labs = itertools.count(1)
_tap_numbers = itertools.count(1)


def run(argv: list[str], netns: str | None = None, timeout: float = 30.0) -> str:
    """Run a set-up command (in ``netns`` when given); its output, or RuntimeError with stderr."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def in_private_netns() -> bool:
    """Whether this namespace is a private one: no default route, so no way out to the host's network."""
    return not any(run(["ip", f"-{v}", "route", "show", "default"]).strip() for v in ("4", "6"))


def accelerator() -> str:
    """``kvm`` only where /dev/kvm is a normal KVM; the nested PVM one crawls then dies: TCG there."""
    if os.path.exists("/dev/kvm") and not os.path.exists("/sys/module/kvm_pvm"):
        return "kvm"
    return "tcg"


def kill_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaps it when it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child by its PID (TERM, then KILL) and let its Popen know it is gone."""
    kill_pid(process.pid)
    process.wait(timeout=5)  # reaped already: returns at once


def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something true; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Qmp:
    """A QMP connection: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        wait_for(f"QMP socket {path}", lambda: self._try_connect(path), timeout)
        self._file = self._sock.makefile("rb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _try_connect(self, path: Path) -> bool:
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        return True

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise ConnectionError("QMP closed")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command; its ``return`` value, RuntimeError on an ``error`` reply."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        for _ in range(1000):  # events may come first
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
        raise RuntimeError(f"QMP {command}: no reply among 1000 messages")

    def close(self) -> None:
        """Close the connection (the VM keeps running)."""
        self._file.close()
        self._sock.close()


class GuestAgent:
    """qemu-guest-agent over its virtio-serial chardev: run commands in the guest, no network."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self._buf = b""
        self._sync_id = int(time.time()) % 100000

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self._path))
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf = b""

    def _call(self, message: dict[str, Any], timeout: float) -> Any:
        sock = self._connect()
        sock.settimeout(timeout)
        sock.sendall(json.dumps(message).encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("guest agent closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line.lstrip(b"\xff"))
        if "error" in reply:
            raise RuntimeError(f"guest agent {message['execute']}: {reply['error']}")
        return reply.get("return")

    def sync(self, timeout: float) -> None:
        """Wait until the agent in the guest answers (it starts late in the boot)."""

        def answered() -> bool:
            self._sync_id += 1
            try:
                return bool(
                    self._call({"execute": "guest-sync", "arguments": {"id": self._sync_id}}, 2.0)
                    == self._sync_id
                )
            except (OSError, ValueError, RuntimeError):
                self._reset()
                return False

        wait_for("qemu-guest-agent", answered, timeout, interval=0.5)

    def run(self, argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
        """Run ``argv`` in the guest; (exit code, stdout + stderr)."""
        self.sync(timeout)
        pid = self._call(
            {
                "execute": "guest-exec",
                "arguments": {"path": argv[0], "arg": argv[1:], "capture-output": True},
            },
            10.0,
        )["pid"]

        def status() -> dict[str, Any] | None:
            state: dict[str, Any] = self._call(
                {"execute": "guest-exec-status", "arguments": {"pid": pid}}, 10.0
            )
            return state if state.get("exited") else None

        state = wait_for(f"guest command {argv}", status, timeout, interval=0.1)
        out = base64.b64decode(state.get("out-data", "")) + base64.b64decode(state.get("err-data", ""))
        return int(state.get("exitcode", -1)), out.decode(errors="replace")

    def spawn(self, argv: list[str]) -> int:
        """Start ``argv`` in the guest without waiting (a server); its pid in the guest."""
        self.sync(60.0)
        started = self._call({"execute": "guest-exec", "arguments": {"path": argv[0], "arg": argv[1:]}}, 10.0)
        return int(started["pid"])

    def close(self) -> None:
        """Close the connection."""
        self._reset()


@dataclass
class VmLab:
    """The management network: a namespace with a bridge, dnsmasq, and a veth to the caller."""

    workdir: Path
    name: str = field(default_factory=lambda: f"ampvm-{os.getpid()}-{next(_labs)}")
    dnsmasq: subprocess.Popen[bytes] | None = None
    created: bool = False
    peer: str = ""

    @property
    def leases(self) -> Path:
        """dnsmasq's lease file: how the lab learns the VM's address."""
        return self.workdir / "dnsmasq.leases"

    def create(self) -> VmLab:
        """Namespace, bridge, veth to the caller, dnsmasq; undone by ``destroy``."""
        if not in_private_netns():
            raise RuntimeError(
                "VmLab needs the caller in a private network namespace (this one has a default route)"
            )
        run(["ip", "netns", "add", self.name])
        self.created = True
        ns = self.name
        run(["ip", "link", "set", "lo", "up"], ns)
        run(["ip", "link", "add", "br0", "type", "bridge"], ns)
        run(["ip", "address", "add", f"{LAB_ADDRESS}/{PREFIX}", "dev", "br0"], ns)
        run(["ip", "link", "set", "br0", "up"], ns)
        peer = self.peer = f"vml{os.getpid() % 100000}-{self.name.rsplit('-', 1)[-1]}"[:15]
        run(["ip", "link", "add", peer, "type", "veth", "peer", "name", "uplink", "netns", ns])
        run(["ip", "link", "set", "uplink", "master", "br0", "up"], ns)
        run(["ip", "address", "add", f"{CALLER_ADDRESS}/{PREFIX}", "dev", peer])
        run(["ip", "link", "set", peer, "up"])
        run(["ip", "link", "set", "lo", "up"])
        self._start_dnsmasq()
        return self

    def _start_dnsmasq(self) -> None:
        argv = [
            "ip", "netns", "exec", self.name, "dnsmasq", "--keep-in-foreground", "--no-daemon",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "--interface=br0",
            "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,{LEASE_SECONDS}",
            f"--dhcp-leasefile={self.leases}", f"--dhcp-option=option:router,{LAB_ADDRESS}",
            "--dhcp-option=option:mtu,1500", "--dhcp-authoritative", "--log-dhcp",
        ]  # fmt: skip
        log = (self.workdir / "dnsmasq.log").open("wb")
        self.dnsmasq = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def tap(self, name: str, bridge: str = "br0") -> str:
        """A tap device on ``bridge`` (the management network by default) for one VM NIC."""
        run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], self.name)
        run(["ip", "link", "set", name, "master", bridge, "up"], self.name)
        return name

    def bridge(self, name: str) -> str:
        """Another network of the lab (a tenant network): a bridge without an address of its own."""
        run(["ip", "link", "add", name, "type", "bridge"], self.name)
        run(["ip", "link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"], self.name)
        run(["ip", "link", "set", name, "up"], self.name)
        return name

    def delete_link(self, name: str) -> None:
        """Remove a tap or bridge of the lab (gone already is fine)."""
        with contextlib.suppress(RuntimeError):
            run(["ip", "link", "delete", name], self.name)

    def connect(self, bridge: str, netns: str, ifname: str = "eth0") -> str:
        """A veth from ``bridge`` to the namespace ``netns`` (named ``ifname`` there, down)."""
        port = f"{bridge}-{netns[-4:]}"[:15]
        run(["ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns], self.name)
        run(["ip", "link", "set", port, "master", bridge, "up"], self.name)
        return port

    def lease_of(self, mac: str, since: float = 0.0) -> str | None:
        """The IPv4 address dnsmasq leased to ``mac`` last, if any (granted at ``since`` or later).

        A VM booted again with the same MAC gets a new machine-id, so a new DHCP client id and a new
        address: its lease is the one that expires last, and was granted after it started.
        """
        if not self.leases.exists():
            return None
        found: list[tuple[int, str]] = []
        for line in self.leases.read_text().splitlines():
            fields = line.split()
            ours = len(fields) >= 3 and fields[1].lower() == mac.lower() and fields[0].isdigit()
            if ours and int(fields[0]) - LEASE_SECONDS >= since - 2:  # granted since then
                found.append((int(fields[0]), fields[2]))
        return max(found)[1] if found else None

    def destroy(self) -> None:
        """Stop dnsmasq by PID and remove the namespace (its veth end goes with it)."""
        if self.dnsmasq is not None:
            stop_process(self.dnsmasq)
            self.dnsmasq = None
        if self.peer:
            with contextlib.suppress(RuntimeError):
                run(["ip", "link", "delete", self.peer])
            self.peer = ""
        if self.created:
            with contextlib.suppress(RuntimeError):
                run(["ip", "netns", "delete", self.name])
            self.created = False


@dataclass
class Vm:
    """One amphora VM booted from a copy-on-write overlay of ``image`` in ``lab``."""

    lab: VmLab
    image: Path
    config_drive: Path | None
    guest_agent: bool = True
    mac: str = "fa:16:3e:00:00:01"
    name: str = "amp"
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0  # wall clock, as dnsmasq's lease times
    _qmp: Qmp | None = None
    _guest: GuestAgent | None = None
    _taps: list[str] = field(default_factory=list)  # deleted when the VM stops

    @property
    def dir(self) -> Path:
        """This VM's files: overlay, serial log, sockets."""
        return self.lab.workdir / self.name

    @property
    def serial_log(self) -> Path:
        """The guest's serial console (kernel and systemd messages)."""
        return self.dir / "serial.log"

    def argv(self, tap: str) -> list[str]:
        """The qemu command line (machine type pc like Nova's default, IDE cdrom for the drive)."""
        accel = accelerator()
        argv = [
            "qemu-system-x86_64", "-machine", f"pc,accel={accel}",
            "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(MEMORY_MIB), "-smp", str(CPUS), "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{self.serial_log}", "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-drive", f"file={self.dir / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"tap,id=mgmt,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=mgmt,mac={self.mac}",
        ]  # fmt: skip
        if self.config_drive is not None:
            argv += ["-drive", f"file={self.config_drive},media=cdrom,if=ide,readonly=on,format=raw"]
        if self.guest_agent:
            argv += [
                "-chardev", f"socket,path={self.dir / 'qga.sock'},server=on,wait=off,id=qga0",
                "-device", "virtio-serial",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]  # fmt: skip
        return argv

    def start(self) -> Vm:
        """Make the overlay and start qemu in the lab's namespace (returns at once)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        overlay = self.dir / "disk.qcow2"
        run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(self.image.resolve()),
                "-F",
                "raw",
                str(overlay),
            ]
        )
        tap = self.lab.tap(f"t{next(_tap_numbers)}-{self.name}"[:15])
        self._taps.append(tap)
        log = (self.dir / "qemu.log").open("wb")
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        argv = ["ip", "netns", "exec", self.lab.name, *self.argv(tap)]
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return self

    @property
    def qmp(self) -> Qmp:
        """The QMP connection, opened on first use."""
        if self._qmp is None:
            self._qmp = Qmp(self.dir / "qmp.sock")
        return self._qmp

    def guest(self) -> GuestAgent:
        """The guest-agent client (test build only), opened on first use."""
        if self._guest is None:
            self._guest = GuestAgent(self.dir / "qga.sock")
        return self._guest

    def address(self, timeout: float = 120.0) -> str:
        """The management address the VM got by DHCP."""
        address: str = wait_for(
            "DHCP lease", lambda: self.lab.lease_of(self.mac, self.started_wall), timeout, interval=0.2
        )
        return address

    def console(self) -> str:
        """The serial console so far."""
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def hotplug(self, mac: str, bridge: str, device: str) -> None:
        """Attach a NIC to the running VM as Nova attaches a port: a tap, ``netdev_add``, ``device_add``.

        The guest sees a new virtio NIC with ``mac``, down and unconfigured; ``device`` names the
        tap (in the lab's namespace), the netdev and the device (15 characters at most).
        """
        tap = self.lab.tap(f"h{next(_tap_numbers)}-{device}"[:15], bridge)  # unique: two VMs may use one name
        self._taps.append(tap)
        self.qmp.execute("netdev_add", type="tap", id=device, ifname=tap, script="no", downscript="no")
        self.qmp.execute("device_add", driver="virtio-net-pci", netdev=device, mac=mac, id=device)

    def reset(self) -> None:
        """A hard reset (``system_reset``), as a hypervisor host reboot would be."""
        self.qmp.execute("system_reset")

    def alive(self) -> bool:
        """Whether qemu still runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """QMP ``quit``, then the PID: qemu is gone when this returns."""
        if self._guest is not None:
            self._guest.close()
            self._guest = None
        if self._qmp is not None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._qmp.execute("quit")
            with contextlib.suppress(OSError):
                self._qmp.close()
            self._qmp = None
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        while self._taps:
            self.lab.delete_link(self._taps.pop())


@contextlib.contextmanager
def lab(workdir: Path) -> Iterator[VmLab]:
    """A ``VmLab`` destroyed afterwards, whatever happens (exceptions, Ctrl-C)."""
    net = VmLab(workdir)
    try:
        yield net.create()
    finally:
        net.destroy()


@contextlib.contextmanager
def booted(net: VmLab, image: Path, drive: Path | None, **kwargs: Any) -> Iterator[Vm]:
    """A started ``Vm``, stopped by PID afterwards."""
    vm = Vm(net, image, drive, **kwargs)
    try:
        yield vm.start()
    finally:
        vm.stop()

"""An amphora on one machine, for the tests, the demo and the benchmarks.

The calling process first moves into a network namespace of its own (``isolate``), so nothing here
ever touches the host's interfaces. Each ``Amphora`` is a namespace that plays the VM, with the agent
running inside it (``nsenter --net``), a veth pair as its management NIC, and optionally a veth pair
into its haproxy namespace that carries VIPs and member subnets back to the calling namespace, where
clients and member servers run.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import http.server
import itertools
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.system import files
from lab import configs

CLONE_NEWNET = 0x40000000
# the agents' haproxy_cmd; scripts/haproxy_check_twice.py runs every check both ways (lab/verdicts.py)
HAPROXY_CMD = os.environ.get("AMPHORA_HAPROXY_CMD", "/usr/sbin/haproxy")
_counter = itertools.count(1)
T = TypeVar("T")


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    """Run a setup command (optionally in a namespace) and return its output."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def isolate() -> None:
    """Move this (still single-threaded) process into a fresh network namespace with ``lo`` up."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    sh("ip", "link", "set", "lo", "up")


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    return False


def kill_pid(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, one process by PID."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_until(lambda: not alive(pid), timeout):
            return


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone; one of ours is reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return state not in ("Z", "X")


class MTLSConnection(http.client.HTTPSConnection):
    """One kept-alive HTTPS connection presenting a client certificate and checking the agent's name."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float = 30
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._ctx = context
        self._server_name = server_name

    def connect(self) -> None:
        """TCP, then TLS with SNI and verification against the amphora id (not the address)."""
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._server_name)


@dataclass
class Tenant:
    """The tenant-facing link of an amphora: VIPs on its haproxy namespace, members on our side."""

    link: str
    vips: list[str]
    member_addresses: list[str]


@dataclass
class Amphora:
    """A namespace playing an amphora VM, with a real agent inside it."""

    workdir: Path
    amphora_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    index: int = field(default_factory=lambda: next(_counter))
    ca: CertificateAuthority = field(default_factory=CertificateAuthority)
    process: subprocess.Popen[bytes] | None = None
    tenant: Tenant | None = None
    extra_config: dict[str, dict[str, str]] = field(default_factory=dict)
    hotplugged: list[str] = field(default_factory=list)  # far ends of hot-plugged ports in our namespace

    def __post_init__(self) -> None:
        self.name = f"amp{os.getpid() % 100000}-{self.index}"
        self.haproxy_ns = f"{self.name}-hx"
        self.mgmt_link = f"m{os.getpid() % 100000}x{self.index}"
        self.mgmt_ip = f"2001:db8:f00:{self.index:x}::2"
        self.base = self.workdir / "lib"
        self.certs = self.workdir / "certs"
        self.config_file = self.workdir / "amphora-agent.conf"
        self.log_file = self.workdir / "agent.log"

    # -- set-up ------------------------------------------------------------------------------
    def create(self) -> Amphora:
        """Make the namespace, the management link and the certificates; write the agent config."""
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.mgmt_link, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        sh("ip", "addr", "add", f"2001:db8:f00:{self.index:x}::1/64", "dev", self.mgmt_link, "nodad")
        sh("ip", "link", "set", self.mgmt_link, "up")
        sh("ip", "-n", self.name, "addr", "add", f"{self.mgmt_ip}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", self.name, "link", "set", "eth0", "up")
        files.ensure_dir(self.certs)
        files.atomic_write(self.certs / "client_ca.pem", self.ca.cert_pem, files.PUBLIC)
        server = self.ca.issue(self.amphora_id, server=True)
        files.atomic_write(self.certs / "server.pem", server.bundle)
        client = self.ca.issue("controller", server=False)
        files.atomic_write(self.certs / "client.pem", client.bundle)
        self.write_config()
        return self

    def config_sections(self) -> dict[str, dict[str, str]]:
        """The agent's INI as sections; ``extra_config`` overrides."""
        sections = {
            "DEFAULT": {"debug": "True"},
            "haproxy_amphora": {
                "base_path": str(self.base),
                "base_cert_dir": str(self.base / "certs"),
                "bind_host": "::",
                "bind_port": "9443",
                "haproxy_cmd": HAPROXY_CMD,
            },
            "health_manager": {"controller_ip_port_list": "", "heartbeat_interval": "10"},
            "amphora_agent": {
                "agent_server_ca": str(self.certs / "client_ca.pem"),
                "agent_server_cert": str(self.certs / "server.pem"),
                "amphora_id": self.amphora_id,
                "network_namespace": self.haproxy_ns,
                "agent_server_network_dir": str(self.workdir / "interfaces"),
                "pci_rescan_file": str(self.workdir / "pci-rescan"),  # written only where it exists
            },
            "controller_worker": {"loadbalancer_topology": "SINGLE"},
        }
        for section, values in self.extra_config.items():
            sections.setdefault(section, {}).update(values)
        return sections

    def write_config(self) -> None:
        """(Re)write the agent config file."""
        lines = []
        for section, values in self.config_sections().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
            lines.append("")
        files.atomic_write(self.config_file, "\n".join(lines).encode())

    def start_agent(self, timeout: float = 20.0) -> None:
        """Start the agent inside the amphora namespace and wait until it answers."""
        log = open(self.log_file, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.name}",
                "--",
                sys.executable,
                "-m",
                "amphora_agent",
                "--config-file",
                str(self.config_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not wait_until(self._answers, timeout, 0.05):
            self.stop_agent()
            raise RuntimeError(f"agent did not start:\n{self.log_file.read_text()[-3000:]}")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"agent exited:\n{self.log_file.read_text()[-3000:]}")
        with self.client() as client:
            return client.get("/").status_code == 200

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        """Stop the agent process (haproxy keeps running, as on a real amphora)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    # -- clients -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The agent's base URL from the calling namespace."""
        return f"https://[{self.mgmt_ip}]:9443"

    def ssl_context(self, client_pem: Path | None = None) -> ssl.SSLContext:
        """Verify the agent against our CA by the amphora id, as the controller does."""
        ctx = ssl.create_default_context(cafile=str(self.certs / "client_ca.pem"))
        ctx.load_cert_chain(str(client_pem or self.certs / "client.pem"))
        return ctx

    def https(self, timeout: float = 30) -> MTLSConnection:
        """A plain ``http.client`` connection to the agent (kept alive, little client time)."""
        return MTLSConnection(self.mgmt_ip, 9443, self.ssl_context(), self.amphora_id, timeout)

    def tls_socket(self, timeout: float = 10) -> ssl.SSLSocket:
        """A TCP connection to the agent with the TLS handshake done, nothing sent yet."""
        sock = socket.create_connection((self.mgmt_ip, 9443), timeout=timeout)
        return self.ssl_context().wrap_socket(sock, server_hostname=self.amphora_id)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client bound to this agent; each request checks the name = amphora id."""

        def sni(request: httpx.Request) -> None:
            request.extensions["sni_hostname"] = self.amphora_id

        return httpx.Client(
            base_url=self.url,
            verify=self.ssl_context(),
            timeout=30.0,
            event_hooks={"request": [sni]},
            **kwargs,
        )

    # -- tenant traffic ----------------------------------------------------------------------
    def wire_tenant(
        self,
        vips: list[str],
        member_addresses: list[str],
        haproxy_side: list[str] | None = None,
    ) -> Tenant:
        """A veth from our namespace into the haproxy namespace: VIPs there, member addresses here.

        ``vips`` and ``haproxy_side`` are CIDRs placed on the haproxy side (``eth1``);
        ``member_addresses`` are CIDRs placed on our side, where clients and members run.
        """
        if not os.path.exists(f"/run/netns/{self.haproxy_ns}"):
            sh("ip", "netns", "add", self.haproxy_ns)
            sh("ip", "-n", self.haproxy_ns, "link", "set", "lo", "up")
        link = f"t{os.getpid() % 100000}x{self.index}"
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth1", "netns", self.haproxy_ns)
        for cidr in [*vips, *(haproxy_side or [])]:
            sh("ip", "-n", self.haproxy_ns, "addr", "add", cidr, "dev", "eth1", "nodad")
        for cidr in member_addresses:
            sh("ip", "addr", "add", cidr, "dev", link, "nodad")
        sh("ip", "-n", self.haproxy_ns, "link", "set", "eth1", "up")
        sh("ip", "link", "set", link, "up")
        self.tenant = Tenant(link, vips, member_addresses)
        return self.tenant

    # -- hot-plugged ports (the VIP and member NICs the agent plugs itself) ------------------
    def hotplug(self, mac: str, peer: str | None = None, peer_addresses: tuple[str, ...] = ()) -> str:
        """A new NIC in the amphora namespace, down, with ``mac``: a veth whose far end is up.

        The far end sits in the namespace ``peer`` (None: ours) with ``peer_addresses`` (CIDRs).
        Returns the NIC's name in the amphora namespace, as the kernel would give a fresh one.
        """
        number = next(_counter)
        nic, far = f"ens{number}", f"h{os.getpid() % 100000}x{number}"
        sh("ip", "link", "add", far, "type", "veth", "peer", "name", nic, "netns", self.name)
        sh("ip", "-n", self.name, "link", "set", nic, "address", mac)
        where: tuple[str, ...] = ()
        if peer:
            sh("ip", "link", "set", far, "netns", peer)
            where = ("-n", peer)
        else:
            self.hotplugged.append(far)
        for cidr in peer_addresses:
            sh("ip", *where, "addr", "add", cidr, "dev", far, "nodad")
        sh("ip", *where, "link", "set", far, "up")
        return nic

    def simulate_reboot(self) -> None:
        """What a reboot does: agent and haproxy die, the haproxy namespace is gone, and its NICs are
        back in the amphora namespace, down, under fresh kernel names."""
        self.stop_agent(signal.SIGKILL)
        for pid in self.haproxy_processes() + self.keepalived_processes():
            kill_pid(pid)
        if os.path.exists(f"/run/netns/{self.haproxy_ns}"):
            hx = self.haproxy_ns
            for link in json.loads(sh("ip", "-n", hx, "-j", "link", "show")):
                old, new = link["ifname"], f"ens{next(_counter)}"
                if old != "lo":
                    sh("ip", "-n", hx, "link", "set", old, "down")
                    sh("ip", "-n", hx, "link", "set", old, "netns", self.name, "name", new)
            sh("ip", "netns", "del", self.haproxy_ns)

    # -- tear-down ---------------------------------------------------------------------------
    def haproxy_pids(self) -> list[int]:
        """Masters named by the pid files under our base path."""
        pids = []
        for pid_file in self.base.glob("*/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pid_file.read_text().split()[0]))
        return pids

    def _processes(self, program: bytes) -> list[int]:
        """Live processes whose program is ``program`` and whose command line names our base path."""
        found = []
        marker = str(self.base).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                name = os.path.basename(cmdline.split(b"\0", 1)[0])
                if name == program and marker in cmdline and alive(int(entry.name)):
                    found.append(int(entry.name))
        return sorted(found)

    def haproxy_processes(self) -> list[int]:
        """Every live haproxy process (masters and workers) running a config under our base path."""
        return self._processes(b"haproxy")

    def keepalived_processes(self) -> list[int]:
        """Every live keepalived process (VRRP or LVS, main and children) with a config under our base."""
        return self._processes(b"keepalived")

    def destroy(self) -> None:
        """Stop the agent and every haproxy it started (by PID), delete links and namespaces."""
        self.stop_agent()
        for pid in self.haproxy_processes() + self.keepalived_processes():
            kill_pid(pid)
        for link in (self.mgmt_link, self.tenant.link if self.tenant else None, *self.hotplugged):
            if link:
                sh("ip", "link", "del", link, check=False)
        for name in (self.haproxy_ns, self.name):
            sh("ip", "netns", "del", name, check=False)


class _Backend(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's name: members whose replies show the balancing."""

    protocol_version = "HTTP/1.1"
    name = b"backend"

    def do_GET(self) -> None:
        body = self.server.name_bytes  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _DualStackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], name: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Backend)
        self.name_bytes = name.encode()

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (it stalls for seconds in a namespace whose
        default route leads nowhere, such as an amphora's haproxy namespace)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for resets (haproxy's TCP health checks close with RST); print anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def backend_main(argv: list[str]) -> None:
    """``python -m lab.namespaces ADDRESS PORT NAME [PEM]``: a member answering its NAME.

    With PEM (certificate + key) the member speaks HTTPS (ALPN http/1.1), for re-encrypting pools.
    """
    address, port, name = argv[:3]
    server = _DualStackServer((address, int(port)), name)
    if len(argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(argv[3])
        ctx.set_alpn_protocols(["http/1.1"])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


@dataclass
class Peer:
    """A namespace at the far end of hot-plugged ports, where a test's clients or members run."""

    role: str = "peer"
    index: int = field(default_factory=lambda: next(_counter))

    def __post_init__(self) -> None:
        self.name = f"{self.role}{os.getpid() % 100000}-{self.index}"

    def create(self) -> Peer:
        """Make the namespace with ``lo`` up."""
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` in a thread inside this namespace (its sockets open here)."""
        from amphora_agent.system import netns

        return netns.call_in(self.name, func)

    def sh(self, *argv: str, check: bool = True) -> str:
        """Run a command inside this namespace."""
        return sh(*argv, netns=self.name, check=check)

    def destroy(self) -> None:
        """Delete the namespace (and the veth ends in it)."""
        sh("ip", "netns", "del", self.name, check=False)


class Backends:
    """Member servers as child processes of the caller, killed by PID."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, address: str, port: int, name: str, netns: str | None = None, tls_pem: Path | None = None
    ) -> None:
        """Start a member answering ``name`` on ``address:port`` and wait until it listens."""
        argv = [sys.executable, "-m", "lab.namespaces", address, str(port), name]
        if tls_pem is not None:
            argv.append(str(tls_pem))
        if netns:
            argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
        self.processes.append(subprocess.Popen(argv, start_new_session=True, cwd=LAB_ROOT))
        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        def listening() -> bool:
            with socket.socket(family) as sock:
                sock.settimeout(0.2)
                return sock.connect_ex((address, port)) == 0

        if netns is None and not wait_until(listening, 10):
            raise RuntimeError(f"member {name} did not start on {address}:{port}")

    def stop(self) -> None:
        """Kill every member by PID."""
        for process in self.processes:
            process.kill()
            process.wait(5)
        self.processes.clear()


if __name__ == "__main__":
    backend_main(sys.argv[1:])


LAB_ROOT = Path(__file__).resolve().parents[1]  # members run ``python -m lab.namespaces`` from here
PREFLIGHT_TOOLS = ("ip", "nsenter")


@contextlib.contextmanager
def proxy_protocol_member(address: str, port: int, peer: Peer | None = None) -> Iterator[list[bytes]]:
    """A TCP member (in ``peer``, or here) answering each connection with the PROXY line haproxy
    sent first; the lines seen so far."""
    seen: list[bytes] = []
    server = (
        peer.call(lambda: socket.create_server((address, port)))
        if peer
        else socket.create_server((address, port))
    )
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(200).split(b"\r\n", 1)[0]
                except OSError:
                    continue
                if line:
                    seen.append(line)
                    with contextlib.suppress(OSError):  # haproxy's health check resets at once
                        conn.sendall(line + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def preflight() -> str | None:
    """Why the demo cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return "the demo needs root (it creates network namespaces); run it as root: make demo"
    missing = [tool for tool in PREFLIGHT_TOOLS if shutil.which(tool) is None]
    if not configs.HAPROXY.exists():
        missing.append(str(configs.HAPROXY))
    if missing:
        return f"missing {', '.join(missing)}: run `make demo`, which installs them (scripts/bootstrap.sh)"
    return None

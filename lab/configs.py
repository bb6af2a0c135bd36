"""haproxy configs in the shape the Octavia controller renders them, and small traffic helpers.

Used by the demo and the benchmarks: a load balancer is a list of listeners (frontend + backend
named ``<pool>:<listener>``), members are the lab's small HTTP servers.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# What the controller renders, vendored with the tests (tests/data/controller/README.md)
CONTROLLER_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "controller"

# The demo's and benchmarks' networks: a client, the VIP on the haproxy namespace, two member hosts.
VIP = "198.51.100.10"
CLIENT_ADDRESS = "198.51.100.1/24"
MEMBER_HOSTS = ("203.0.113.11", "203.0.113.12")
HAPROXY_MEMBER_SIDE = "203.0.113.2/24"
HAPROXY = Path("/usr/sbin/haproxy")


def fixed_id(name: str) -> str:
    """A readable, stable UUID for a lab object (the same on every run)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"amphora-agent-lab/{name}"))


@dataclass(frozen=True)
class Member:
    """A pool member: a small HTTP server answering its name."""

    name: str
    address: str
    port: int

    @property
    def id(self) -> str:
        """The member's UUID (haproxy's server name)."""
        return fixed_id(f"member/{self.name}")


@dataclass(frozen=True)
class Listener:
    """A listener and its pool, as the controller renders them (frontend + backend)."""

    name: str
    protocol: str  # HTTP or TCP
    port: int
    members: tuple[Member, ...]
    frontend_rules: tuple[str, ...] = ()  # e.g. an L7 policy: ``acl ...`` + ``redirect ...``

    @property
    def id(self) -> str:
        """The listener's UUID (haproxy's frontend name)."""
        return fixed_id(f"listener/{self.name}")

    @property
    def pool_id(self) -> str:
        """The pool's UUID."""
        return fixed_id(f"pool/{self.name}")

    @property
    def backend(self) -> str:
        """The controller's backend name: ``<pool>:<listener>``."""
        return f"{self.pool_id}:{self.id}"


def _frontend(listener: Listener, vip: str, maxconn: int) -> list[str]:
    mode = "http" if listener.protocol == "HTTP" else "tcp"
    return [
        f"frontend {listener.id}",
        f"    maxconn {maxconn}",
        f"    bind {vip}:{listener.port}",
        f"    mode {mode}",
        *(f"    {rule}" for rule in listener.frontend_rules),
        f"    default_backend {listener.backend}",
        "    timeout client 50000",
        "",
    ]


def _backend(listener: Listener, maxconn: int) -> list[str]:
    if listener.protocol == "HTTP":
        head = ["    mode http", "    http-reuse safe", "    balance roundrobin"]
        checks = ["    timeout check 3s", "    option httpchk GET /", "    http-check expect rstatus 200"]
    else:
        head = ["    mode tcp", "    balance roundrobin"]
        checks = ["    timeout check 3s"]
    servers = [
        f"    server {m.id} {m.address}:{m.port} weight 1 check inter 5s fall 3 rise 2"
        for m in listener.members
    ]
    return [
        f"backend {listener.backend}",
        *head,
        "    load-server-state-from-file global",
        *checks,
        f"    fullconn {maxconn}",
        "    option allbackups",
        "    timeout connect 5000",
        "    timeout server 50000",
        *servers,
        "",
    ]


def render_config(
    lb_id: str, vip: str, listeners: tuple[Listener, ...], base_path: Path, maxconn: int = 2000
) -> bytes:
    """A haproxy.cfg in the controller's template shape, paths under the agent's ``base_path``.

    The controller's ``log`` lines are left out: there is no syslog socket in the demo.
    """
    lines = [
        f"# Configuration for loadbalancer {lb_id}",
        "global",
        "    daemon",
        "    user nobody",
        f"    stats socket {base_path}/{lb_id}.sock mode 0666 level user",
        f"    server-state-file {base_path}/{lb_id}/servers-state",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        "    retries 3",
        "    option redispatch",
        "    option splice-request",
        "    option splice-response",
        "    option http-keep-alive",
        "",
    ]
    for listener in listeners:
        lines += _frontend(listener, vip, maxconn)
        lines += _backend(listener, maxconn)
    return "\n".join(lines).encode()


def prometheus_sections(listener_id: str, vip: str, port: int, maxconn: int = 100) -> bytes:
    """A PROMETHEUS listener as the controller renders it (``controller/haproxy/prometheus.cfg``):
    haproxy's exporter on 127.0.0.1:9101, the user-facing frontend sent to 127.0.0.1:9102."""
    return f"""
frontend prometheus-exporter-internal-endpoint
    bind 127.0.0.1:9101
    mode http
    no log
    http-request use-service prometheus-exporter if {{ path /metrics }}
    http-request reject
    timeout http-request 5s
    timeout client 5s
backend prometheus-exporter-internal
    mode http
    no log
    balance first
    timeout connect 5s
    timeout server 5s
    server prometheus-internal 127.0.0.1:9102

frontend {listener_id}
    maxconn {maxconn}
    bind {vip}:{port}
    mode http
    timeout client 50000
    default_backend prometheus-exporter-internal
""".encode()


def http_get(host: str, port: int, path: str = "/", timeout: float = 3.0) -> tuple[int, bytes, str]:
    """One GET on a new connection: status, body and the Location header."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Location") or ""
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (0 when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Load:
    """HTTP requests on new connections from a few threads, bounded in count and time."""

    host: str
    port: int = 80
    threads: int = 4
    max_seconds: float = 120.0
    max_requests: int = 200_000
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status = http_get(self.host, self.port)[0]
                good, why = status == 200, f"status {status}"
            except (OSError, http.client.HTTPException) as exc:
                good, why = False, repr(exc)
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(why)
                if self.ok + self.failed >= self.max_requests:
                    return

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

"""haproxy configs in the shape the Octavia controller renders them, and small traffic helpers.

Used by the demo and the benchmarks: a load balancer is a list of listeners (frontend + backend
named ``<pool>:<listener>``), members are the lab's small HTTP servers.
"""

from __future__ import annotations

import contextlib
import http.client
import uuid
from dataclasses import dataclass
from pathlib import Path


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

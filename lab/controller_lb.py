"""A load balancer of many listeners as the controller's combined-listeners template renders it.

For the VM benchmark: HTTP, TCP and TERMINATED_HTTPS listeners in turn, with the controller's global
``maxconn`` (the sum of the listeners' connection limits, 50,000 for an unset one, capped at
1,000,000), its log lines and log formats, and ``tune.ssl.cachesize`` computed from the memory
figures ``GET /1.0/details`` reports, as ``jinja_cfg.JinjaTemplater.build_config`` does. The
shapes follow ``tests/data/controller/haproxy/multi-listener.cfg`` (rendered by the controller).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.configs import fixed_id

DEFAULT_CONNECTION_LIMIT = 50_000  # [haproxy_amphora] default_connection_limit
MAX_MAXCONN = 1_000_000  # constants.HAPROXY_MAX_MAXCONN
PROJECT = "e68cffd4fce3496e56872defff73b60a"  # the fixtures' project
LOG_SOCKET = "/run/rsyslog/octavia/log"
TLS_OPTIONS = (
    "ciphers DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305 "
    "ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256 "
    "no-sslv3 no-tlsv10 no-tlsv11 alpn h2,http/1.1,http/1.0"
)  # the API's default TLS settings, as in the fixture
HTTP_LOG = r"%f\ %ci\ %cp\ %t\ %{+Q}r\ %ST\ %B\ %U\ %[ssl_c_verify]\ %{+Q}[ssl_c_s_dn]\ %b\ %s\ %Tt\ %tsc"
TCP_LOG = r"%f\ %ci\ %cp\ %t\ -\ -\ %B\ %U\ %[ssl_c_verify]\ %{+Q}[ssl_c_s_dn]\ %b\ %s\ %Tt\ %tsc"
PROTOCOLS = ("HTTP", "TCP", "TERMINATED_HTTPS")


@dataclass(frozen=True)
class ShapedListener:
    """One listener: protocol, port and connection limit (None: unset, the controller's default)."""

    index: int
    protocol: str
    port: int
    connection_limit: int | None

    @property
    def id(self) -> str:
        """The listener's UUID (the frontend's name; a TLS listener's crt-list is ``<id>.pem``)."""
        return fixed_id(f"shaped-listener/{self.index}")

    @property
    def backend(self) -> str:
        """``<pool id>:<listener id>``, as the controller names backends."""
        return f"{fixed_id(f'shaped-pool/{self.index}')}:{self.id}"

    @property
    def maxconn(self) -> int:
        """The frontend's ``maxconn``."""
        return self.connection_limit if self.connection_limit is not None else DEFAULT_CONNECTION_LIMIT


def listeners(count: int, limits: Mapping[str, int] | None = None) -> list[ShapedListener]:
    """``count`` listeners, HTTP, TCP and TERMINATED_HTTPS in turn on ports 80, 81, ...; ``limits``
    gives the connection limit per protocol (None: every limit unset)."""
    return [
        ShapedListener(n, PROTOCOLS[n % 3], 80 + n, (limits or {}).get(PROTOCOLS[n % 3]))
        for n in range(count)
    ]


def global_maxconn(shaped: Sequence[ShapedListener]) -> int:
    """The controller's global ``maxconn``: the sum of the limits, capped (``_transform_loadbalancer``)."""
    total = sum(listener.maxconn for listener in shaped)
    return total if 0 < total < MAX_MAXCONN else MAX_MAXCONN


def ssl_cachesize(memory: Mapping[str, int], maxconn: int) -> int | None:
    """``tune.ssl.cachesize`` from ``/1.0/details`` memory (kB): 2/5 of what 32 kB per connection leaves,
    4 entries per kB; None (haproxy's default of 20,000) when that is 5,000 kB or less."""
    kb = (memory["free"] + memory["buffers"] + memory["cached"] - 32 * maxconn) * 2 // 5
    return kb * 4 if kb > 5000 else None


def _frontend(listener: ShapedListener, vip: str, lb_id: str, crt_dir: Path) -> list[str]:
    tls = listener.protocol == "TERMINATED_HTTPS"
    bind = f"    bind {vip}:{listener.port}"
    if tls:
        bind += f" ssl crt-list {crt_dir / lb_id / listener.id}.pem {TLS_OPTIONS}"
    log = HTTP_LOG if listener.protocol != "TCP" else TCP_LOG
    return [
        f"frontend {listener.id}",
        f"    maxconn {listener.maxconn}",
        *(["    redirect scheme https if !{ ssl_fc }"] if tls else []),
        bind,
        f"    mode {'tcp' if listener.protocol == 'TCP' else 'http'}",
        f"    default_backend {listener.backend}",
        "    timeout client 50000",
        f"    log-format {PROJECT}\\ {lb_id}\\ {log}",
        "",
    ]


def _backend(listener: ShapedListener, members: Sequence[tuple[str, int]]) -> list[str]:
    http = listener.protocol != "TCP"
    head = ["    mode http", "    http-reuse safe", "    balance roundrobin"] if http else [
        "    mode tcp", "    balance roundrobin"]  # fmt: skip
    checks = ["    timeout check 3s"]
    if http:
        checks += ["    option httpchk GET /", "    http-check expect rstatus 200", "    option forwardfor"]
        proto = "https" if listener.protocol == "TERMINATED_HTTPS" else "http"
        checks += [f"    http-request set-header X-Forwarded-Proto {proto}"]
    servers = [
        f"    server {fixed_id(f'shaped-member/{listener.index}/{n}')} {address}:{port} weight 1 "
        "check inter 5s fall 3 rise 2"
        for n, (address, port) in enumerate(members)
    ]
    return [
        f"backend {listener.backend}",
        *head,
        "    load-server-state-from-file global",
        *checks,
        f"    fullconn {listener.maxconn}",
        "    option allbackups",
        "    timeout connect 5000",
        "    timeout server 50000",
        *servers,
        "",
    ]


def render(
    lb_id: str,
    vip: str,
    shaped: Sequence[ShapedListener],
    members: Sequence[tuple[str, int]],
    memory: Mapping[str, int],
    base_path: Path = Path("/var/lib/octavia"),
    crt_dir: Path = Path("/var/lib/octavia/certs"),
) -> bytes:
    """The haproxy.cfg the controller would send for this load balancer to an amphora whose
    ``/1.0/details`` reported ``memory``."""
    maxconn = global_maxconn(shaped)
    cache = ssl_cachesize(memory, maxconn) if any(x.protocol == "TERMINATED_HTTPS" for x in shaped) else None
    lines = [
        f"# Configuration for loadbalancer {lb_id}",
        "global",
        "    daemon",
        "    user nobody",
        f"    log {LOG_SOCKET} local0",
        f"    log {LOG_SOCKET} local1 notice",
        f"    stats socket {base_path}/{lb_id}.sock mode 0666 level user",
        f"    server-state-file {base_path}/{lb_id}/servers-state",
        f"    maxconn {maxconn}",
        *([f"    tune.ssl.cachesize {cache}"] if cache is not None else []),
        "",
        "defaults",
        "    log global",
        "    retries 3",
        "    option redispatch",
        "    option splice-request",
        "    option splice-response",
        "    option http-keep-alive",
        "",
    ]
    for listener in shaped:
        lines += _frontend(listener, vip, lb_id, crt_dir) + _backend(listener, members)
    return "\n".join(lines).encode()


def crt_list(lb_id: str, pem_name: str, crt_dir: Path = Path("/var/lib/octavia/certs")) -> bytes:
    """A TLS listener's crt-list: the one certificate file, as the controller writes it."""
    return f"{crt_dir / lb_id / pem_name}\n".encode()

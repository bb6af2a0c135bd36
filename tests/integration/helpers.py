"""Helpers shared by the integration tests."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from amphora_agent import lab

SINGLE_HTTP_LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
SINGLE_HTTP_VIP = "198.51.100.10"


def render(fixtures_dir: Path, name: str, amp: lab.Amphora) -> bytes:
    """A controller-rendered haproxy config with the agent paths of ``amp`` substituted."""
    text = (fixtures_dir / "haproxy" / name).read_text()
    text = text.replace("/var/lib/octavia/certs", str(amp.base / "certs"))
    return text.replace("/var/lib/octavia", str(amp.base)).encode()


def get(host: str, port: int = 80, path: str = "/", timeout: float = 3.0) -> tuple[int, bytes]:
    """One HTTP GET on a new connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wire_single_http(amp: lab.Amphora, backends: lab.Backends) -> None:
    """The single-http LB's network: VIP 198.51.100.10 on the amphora, two members on our side."""
    amp.wire_tenant(
        vips=["198.51.100.10/24"],
        member_addresses=["198.51.100.1/24", "203.0.113.11/24", "203.0.113.12/24"],
        haproxy_side=["203.0.113.2/24"],
    )
    backends.start("203.0.113.11", 80, "member-1")
    backends.start("203.0.113.12", 80, "member-2")


@dataclass
class Load:
    """Requests on new connections from a few threads, bounded in time, counting failures."""

    host: str
    port: int = 80
    threads: int = 4
    max_seconds: float = 60.0
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
                status, _ = get(self.host, self.port)
                good, why = status == 200, f"status {status}"
            except OSError as exc:
                good, why = False, repr(exc)
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(why)

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

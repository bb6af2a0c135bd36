"""Helpers shared by the integration tests."""

from __future__ import annotations

import http.client
from pathlib import Path

from lab import namespaces
from lab.configs import Load as Load  # re-exported for the tests

SINGLE_HTTP_LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
SINGLE_HTTP_VIP = "198.51.100.10"


def render(fixtures_dir: Path, name: str, amp: namespaces.Amphora) -> bytes:
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


def wire_single_http(amp: namespaces.Amphora, backends: namespaces.Backends) -> None:
    """The single-http LB's network: VIP 198.51.100.10 on the amphora, two members on our side."""
    amp.wire_tenant(
        vips=["198.51.100.10/24"],
        member_addresses=["198.51.100.1/24", "203.0.113.11/24", "203.0.113.12/24"],
        haproxy_side=["203.0.113.2/24"],
    )
    backends.start("203.0.113.11", 80, "member-1")
    backends.start("203.0.113.12", 80, "member-2")

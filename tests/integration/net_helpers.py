"""Network test helpers: controller bodies, clients in peer namespaces, kernel state, announcements."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

from amphora_agent.system import netns
from lab import namespaces
from tests.conftest import FIXTURES
from tests.integration.helpers import render

REQUESTS = FIXTURES / "requests"
JSON = {"Content-Type": "application/json"}
IPV6_LB = "1d3ba11d-afb5-4b1a-baa7-b2698112993d"


def body(name: str, **changes: Any) -> bytes:
    """A controller request body; keyword arguments replace keys (only where a test needs to)."""
    raw = (REQUESTS / name).read_bytes()
    if not changes:
        return raw
    data = json.loads(raw)
    data.update(changes)
    return json.dumps(data).encode()


def ipv4_member_body() -> bytes:
    """plug-network.json without its IPv6 fixed IP (no duplicate address detection to wait for)."""
    data = json.loads(body("plug-network.json"))
    data["fixed_ips"] = data["fixed_ips"][:1]
    return json.dumps(data).encode()


def config(fixtures_dir: Path, name: str, amp: namespaces.Amphora, *swaps: tuple[str, str]) -> bytes:
    """A controller haproxy config with the agent's paths, and its VIP moved where a test plugged one."""
    text = render(fixtures_dir, name, amp)
    for old, new in swaps:
        text = text.replace(old.encode(), new.encode())
    return text


def fetch(
    peer: namespaces.Peer, host: str, port: int = 80, source: str | None = None, timeout: float = 2.0
) -> bytes:
    """One HTTP/1.0 GET from inside ``peer`` (optionally from ``source``); the body of a 200, else OSError."""

    def go() -> bytes:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            if source:
                sock.bind((source, 0))
            sock.connect((host, port))
            sock.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise OSError(f"unexpected reply {head[:80]!r}")
        return payload

    return peer.call(go)


def answers(
    peer: namespaces.Peer, host: str, port: int = 80, source: str | None = None, timeout: float = 1.0
) -> bool:
    """Whether a GET from ``peer`` gets a 200."""
    try:
        fetch(peer, host, port, source, timeout)
    except OSError:
        return False
    return True


def wait_listening(netns_name: str, host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on host:port inside the namespace ``netns_name``."""

    def probe() -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex((host, port)) == 0

    if not namespaces.wait_until(lambda: netns.call_in(netns_name, probe), timeout, 0.05):
        raise RuntimeError(f"nothing listens on {host}:{port} in {netns_name}")


def post(amp: namespaces.Amphora, path: str, content: bytes) -> int:
    """One POST on a client of its own (for concurrent requests); the status."""
    with amp.client() as api:
        return api.post(path, content=content, headers=JSON).status_code


# -- kernel state, read with iproute2's JSON output ------------------------------------------------------
def ip_json(netns: str, *argv: str) -> list[dict[str, Any]]:
    """``ip -j <argv>`` inside a namespace."""
    out = namespaces.sh("ip", "-n", netns, "-j", *argv)
    return json.loads(out) if out.strip() else []


def links(netns: str) -> dict[str, dict[str, Any]]:
    """Links of a namespace by name."""
    return {link["ifname"]: link for link in ip_json(netns, "link", "show")}


def addresses(netns: str, ifname: str) -> set[str]:
    """``address/prefixlen`` of one link, without link-local ones."""
    found = set()
    for link in ip_json(netns, "addr", "show", "dev", ifname):
        for info in link.get("addr_info", []):
            if info.get("scope") != "link":
                found.add(f"{info['local']}/{info['prefixlen']}")
    return found


def routes(netns: str, *selector: str) -> set[tuple[str, str | None, str | None]]:
    """(dst, gateway, prefsrc) of the routes ``ip route show <selector>`` lists (IPv4 and IPv6)."""
    found = set()
    for family in ("-4", "-6"):
        try:
            listed = ip_json(netns, family, "route", "show", *selector)
        except RuntimeError:  # "FIB table does not exist": no route of this family in that table
            continue
        for route in listed:
            found.add((route["dst"], route.get("gateway"), route.get("prefsrc")))
    return found


def source_rules(netns: str) -> set[tuple[str, str]]:
    """(source, table) of every source policy rule."""
    found = set()
    for family in ("-4", "-6"):
        for rule in ip_json(netns, family, "rule", "show"):
            if rule.get("src") and rule["src"] != "all":
                found.add((rule["src"], str(rule.get("table"))))
    return found


# -- announcements -----------------------------------------------------------------------------------------
class Capture:
    """Every frame arriving in a peer namespace, read for gratuitous ARPs and neighbour advertisements."""

    def __init__(self, peer: namespaces.Peer) -> None:
        self.sock: socket.socket = peer.call(
            lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        )

    def announced(self, wanted: set[str], timeout: float = 3.0) -> set[str]:
        """Addresses announced (ARP sender = target, or NA target) until all ``wanted`` are seen."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                frame = self.sock.recv(2048)
            except TimeoutError:
                break
            seen |= self._decode(frame)
        return seen

    @staticmethod
    def _decode(frame: bytes) -> set[str]:
        kind = struct.unpack("!H", frame[12:14])[0]
        if kind == 0x0806 and frame[28:32] == frame[38:42]:
            return {socket.inet_ntop(socket.AF_INET, frame[28:32])}
        if kind == 0x86DD and frame[20] == 58 and frame[54] == 136:  # ICMPv6 neighbour advertisement
            return {socket.inet_ntop(socket.AF_INET6, frame[62:78])}
        return set()

    def close(self) -> None:
        """Stop capturing."""
        self.sock.close()

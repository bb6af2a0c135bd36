"""Receive heartbeats on a UDP port and print them (``amphoractl heartbeat listen``), for operators.

It checks each datagram as the controller's health manager does (HMAC, bounded decompression, the
message schema) and prints what it would accept, or why it would drop the datagram:

    amphoractl heartbeat listen --port 5555 --key-file /etc/octavia/heartbeat.key
    AMPHORA_HEARTBEAT_KEY=insecure amphoractl heartbeat listen --port 5555 --json --count 3
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from amphora_agent.health import codec


def format_text(message: Mapping[str, Any], source: str, received: datetime) -> str:
    """A readable summary: the amphora, then one line per listener, pool and member."""
    lines = [
        f"{received.isoformat(timespec='milliseconds')} from {source}: amphora {message['id']} "
        f"seq {message['seq']} ver {message['ver']}, {len(message['listeners'])} listener(s), "
        f"{len(message['pools'])} pool(s)"
    ]
    for listener_id, listener in message["listeners"].items():
        figures = " ".join(f"{name}={value}" for name, value in listener["stats"].items())
        lines.append(f"  listener {listener_id} {listener['status']} {figures}")
    for pool_key, pool in message["pools"].items():
        lines.append(f"  pool {pool_key} {pool['status']}")
        lines.extend(f"    member {mid} {status}" for mid, status in pool["members"].items())
    return "\n".join(lines)


def format_json(message: Mapping[str, Any], source: str, received: datetime) -> str:
    """One JSON object per line: arrival time, sender and the decoded message."""
    return json.dumps({"received": received.isoformat(), "from": source, "message": message})


def _source(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    if host.startswith("::ffff:"):
        host = host.removeprefix("::ffff:")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_socket(bind: str, port: int) -> socket.socket:
    """A UDP socket on ``bind``:``port``; ``::`` also receives IPv4."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((bind, port))
    return sock


def listen(
    sock: socket.socket,
    key: str,
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    count: int | None = None,
    timeout: float | None = None,
) -> int:
    """Print heartbeats until ``count`` were accepted or ``timeout`` passed; return how many were."""
    accepted = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    render = format_json if as_json else format_text
    while count is None or accepted < count:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
        try:
            datagram, address = sock.recvfrom(codec.MAX_DATAGRAM + 1)
        except TimeoutError:
            break
        received, source = datetime.now(UTC), _source(address)
        try:
            message = codec.decode(datagram, key)
        except codec.HeartbeatRejected as exc:
            print(f"{received.isoformat(timespec='milliseconds')} from {source}: dropped: {exc}", file=err)
            continue
        print(render(message, source, received), file=out, flush=True)
        accepted += 1
    return accepted

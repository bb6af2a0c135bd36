"""``amphora-heartbeat-listen``: receive heartbeats on a UDP port and print them, for operators.

It checks each datagram as the controller's health manager does (HMAC, bounded decompression, the
message schema) and prints what it would accept, or why it would drop the datagram:

    amphora-heartbeat-listen --port 5555 --key-file /etc/octavia/heartbeat.key
    HEARTBEAT_KEY=insecure amphora-heartbeat-listen --port 5555 --json --count 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from amphora_agent import heartbeat_codec as codec

KEY_ENV = "HEARTBEAT_KEY"


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


def read_key(args: argparse.Namespace) -> str | None:
    """The key from --key-file, --key or the HEARTBEAT_KEY environment variable, in that order."""
    if args.key_file is not None:
        return Path(args.key_file).read_text(encoding="utf-8").rstrip("\r\n")
    return args.key if args.key is not None else os.environ.get(KEY_ENV)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, listen, print; exit 1 when ``--count`` was not reached in ``--timeout``."""
    parser = argparse.ArgumentParser(
        prog="amphora-heartbeat-listen",
        description="Receive amphora heartbeats on a UDP port and print them as the controller reads them.",
    )
    parser.add_argument("--bind", default="::", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5555, help="UDP port (default %(default)s)")
    parser.add_argument("--key", help=f"the heartbeat_key (or set {KEY_ENV}, or use --key-file)")
    parser.add_argument("--key-file", help="a file holding the heartbeat_key")
    parser.add_argument("--json", action="store_true", help="one JSON object per heartbeat")
    parser.add_argument("--count", type=int, help="stop after this many accepted heartbeats")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        key = read_key(args)
    except OSError as exc:
        parser.error(f"cannot read the key file: {exc}")
    if not key:
        parser.error(f"a key is needed: --key, --key-file or {KEY_ENV}")
    try:
        sock = open_socket(args.bind, args.port)
    except OSError as exc:
        print(
            f"amphora-heartbeat-listen: cannot listen on {args.bind} port {args.port}: {exc}", file=sys.stderr
        )
        return 2
    with sock:
        try:
            accepted = listen(
                sock, key, sys.stdout, sys.stderr, as_json=args.json, count=args.count, timeout=args.timeout
            )
        except KeyboardInterrupt:
            return 0
    return 1 if args.count is not None and accepted < args.count else 0


if __name__ == "__main__":
    sys.exit(main())

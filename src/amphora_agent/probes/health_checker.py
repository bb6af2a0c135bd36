"""``amphora-health-checker sctp -t TIMEOUT IP PORT``: the image's SCTP member check, for keepalived.

Sends an SCTP INIT over a raw socket (no kernel SCTP needed) and exits 0 on INIT ACK, 1 on ABORT,
2 on timeout and 3 on anything else. After an INIT ACK it sends an ABORT itself, so the member does not
keep a half-open association. Standard library only: it runs as ``python -I -S health_checker.py``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import socket
import struct
import sys
import time

INIT, INIT_ACK, ABORT = 1, 2, 6
OK, ABORTED, TIMEOUT, OTHER = 0, 1, 2, 3
_TABLE: list[int] = []


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as SCTP checksums its packets."""
    if not _TABLE:
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            _TABLE.append(crc)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def packet(src_port: int, dst_port: int, vtag: int, chunk: bytes) -> bytes:
    """An SCTP packet: common header with its CRC-32C, then one chunk."""
    header = struct.pack("!HHII", src_port, dst_port, vtag, 0)
    checksum = struct.pack("<I", crc32c(header + chunk))
    return header[:8] + checksum + chunk


def init_chunk(tag: int) -> bytes:
    """INIT: initiate tag, a_rwnd, 1 outbound and 1 inbound stream, initial TSN."""
    return struct.pack("!BBHIIHHI", INIT, 0, 20, tag, 65535, 1, 1, tag)


def abort_chunk() -> bytes:
    """ABORT without causes."""
    return struct.pack("!BBH", ABORT, 0, 4)


def parse(data: bytes, family: int) -> tuple[int, int, int, int, bytes] | None:
    """(src port, dst port, vtag, chunk type, chunk) of a received SCTP packet, or None."""
    if family == socket.AF_INET and data:
        data = data[(data[0] & 0x0F) * 4 :]  # IPv4 raw sockets hand over the IP header too
    if len(data) < 16:
        return None
    src, dst, vtag, _ = struct.unpack("!HHII", data[:12])
    return src, dst, vtag, data[12], data[12:]


def check_sctp(address: str, port: int, timeout: float) -> int:
    """Probe ``address:port`` with an INIT; the exit code as the image's checker returns it."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    tag = int.from_bytes(os.urandom(4), "big") or 1
    src_port = 1024 + int.from_bytes(os.urandom(2), "big") % 64000
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_SCTP) as sock:
        sock.sendto(packet(src_port, port, 0, init_chunk(tag)), (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, peer = sock.recvfrom(65535)
            got = parse(data, family)
            if peer[0] != address or got is None or got[:3] != (port, src_port, tag):
                continue  # not the answer to our INIT
            kind, chunk = got[3], got[4]
            if kind == INIT_ACK and len(chunk) >= 8:
                peer_tag = struct.unpack("!I", chunk[4:8])[0]
                sock.sendto(packet(src_port, port, peer_tag, abort_chunk()), (address, 0))
                return OK
            return ABORTED if kind == ABORT else OTHER
    return TIMEOUT


def main(argv: list[str]) -> int:
    """``sctp -t TIMEOUT IP PORT``."""
    parser = argparse.ArgumentParser(prog="amphora-health-checker")
    sub = parser.add_subparsers(dest="protocol", required=True)
    sctp = sub.add_parser("sctp", help="SCTP INIT probe")
    sctp.add_argument("-t", "--timeout", type=float, default=4.0)
    sctp.add_argument("address")
    sctp.add_argument("port", type=int)
    args = parser.parse_args(argv)
    try:
        return check_sctp(args.address, args.port, args.timeout)
    except OSError as exc:
        print(f"amphora-health-checker: {exc}", file=sys.stderr)
        return OTHER


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

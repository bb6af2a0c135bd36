"""``vrrpcheck.py SOCKET...``: exit with the number of haproxy stats sockets that do not answer.

The image's ``haproxy-vrrp-check``, as keepalived's check chain runs it every few seconds. It imports
only the standard library, so it runs as ``python -I -S vrrpcheck.py`` in about 20 ms.
"""

from __future__ import annotations

import socket
import sys

TIMEOUT = 5.0


def answers(path: str, timeout: float = TIMEOUT) -> bool:
    """Whether the stats socket at ``path`` returns data for ``show stat -1 -1 -1``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"show stat -1 -1 -1\n")
            received = 0
            while chunk := sock.recv(65536):
                received += len(chunk)
            return received > 0
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """The number of failing sockets (at most 255)."""
    failures = sum(0 if answers(path) else 1 for path in argv)
    return min(failures, 255)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""haproxy's own exporter (``127.0.0.1:9101/metrics`` in the haproxy namespace), read as it arrives.

haproxy answers chunked, even to HTTP/1.0, and closes. ``Response`` checks the head and hands the
body on piece by piece while it arrives, so that the rewrite can run meanwhile; the caller bounds
the time. The socket is made by the calling thread, so it belongs to that thread's namespace.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

EXPORTER = ("127.0.0.1", 9101)  # the controller's prometheus-exporter-internal-endpoint frontend
EXPORTER_REQUEST = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:9101\r\nUser-Agent: amphora-agent\r\n\r\n"
MAX_EXPORTER_BYTES = 128 << 20  # about 2,000 listeners of 5 members; the memory of a 1 GiB VM
READ_SIZE = 256 << 10
MAX_HEAD = 64 << 10  # the head of haproxy's answer, a chunk header


class ExporterError(Exception):
    """haproxy's exporter could not be read; the message says why."""


# -- the answer, read as it arrives (pure) ---------------------------------------------------------
class Response:
    """An HTTP/1.x answer fed as it arrives: the head must say 200, the body goes to ``sink`` in pieces.

    haproxy's exporter answers chunked (even to HTTP/1.0) and closes; a sized or close-delimited
    body is taken too. ``finish`` at the end of the stream raises unless the body was complete.
    """

    def __init__(self, sink: Callable[[bytes], None], limit: int = MAX_EXPORTER_BYTES) -> None:
        self._sink = sink
        self._limit = limit
        self._buffer = b""  # the head, or a chunk header not complete yet
        self._head = True
        self._chunked = False
        self._length: int | None = None  # content-length, when sized
        self._left = 0  # data bytes left in the current chunk
        self._crlf = False  # the CRLF after a chunk's data is due
        self.size = 0  # body bytes so far
        self.complete = False

    def feed(self, data: bytes | bytearray, size: int | None = None) -> None:
        """More bytes of the answer: ``data[:size]``. The body goes on in one copy out of ``data``."""
        end = len(data) if size is None else size
        start = 0
        if self._head:
            data = self._read_head(self._buffer + bytes(data[:end]))
            start, end = 0, len(data)
            if self._head:
                return
        if self.complete or start >= end:
            return
        body = self._dechunk(data, start, end) if self._chunked else [memoryview(data)[start:end]]
        self.size += sum(len(piece) for piece in body)
        if self.size > self._limit:
            raise ExporterError(f"more than {self._limit} bytes")
        if self._length is not None and self.size >= self._length:
            self.complete = True
        if body:
            self._sink(b"".join(body))

    def finish(self) -> None:
        """The stream has ended: raise unless the answer was whole."""
        if self._head:
            raise ExporterError(f"no HTTP answer ({len(self._buffer)} bytes)")
        if self._chunked and not self.complete:
            where = "a chunk header" if self._buffer or not self._left else "a chunk"
            raise ExporterError(f"the answer ends inside {where}")
        if self._length is not None and self.size != self._length:
            raise ExporterError(f"{self.size} body bytes where content-length says {self._length}")

    def _read_head(self, data: bytes) -> bytes:
        """Parse the head once it is whole; the bytes after it."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                raise ExporterError(f"no HTTP head within {MAX_HEAD} bytes")
            self._buffer = data
            return b""
        status_line, *header_lines = data[:end].split(b"\r\n")
        words = status_line.split(b" ", 2)
        if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
            raise ExporterError(f"not an HTTP answer: {status_line[:80]!r}")
        if words[1] != b"200":
            raise ExporterError(f"answered {status_line.decode('latin-1')[:80]}")
        headers = {}
        for line in header_lines:
            key, colon, value = line.partition(b":")
            if colon:
                headers[key.strip().lower()] = value.strip().lower()
        self._chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
        length = headers.get(b"content-length")
        if not self._chunked and length is not None:
            if not length.isdigit():
                raise ExporterError(f"content-length {length.decode('latin-1')[:20]}")
            self._length = int(length)
            self.complete = self._length == 0
        self._head, self._buffer = False, b""
        return data[end + 4 :]

    def _dechunk(self, data: bytes | bytearray, position: int, end: int) -> list[memoryview]:
        """Views of the chunk data in ``data[position:end]``; a header cut in two waits in ``_buffer``."""
        if self._buffer:
            data, position, end = (
                self._buffer + bytes(data[position:end]),
                0,
                len(self._buffer) + end - position,
            )
            self._buffer = b""
        view = memoryview(data)
        pieces: list[memoryview] = []
        while position < end and not self.complete:
            if self._left:
                take = min(self._left, end - position)
                pieces.append(view[position : position + take])
                self._left -= take
                position += take
                self._crlf = self._left == 0
                continue
            line_end = data.find(b"\r\n", position, end)
            if line_end < 0:
                self._buffer = bytes(data[position:end])
                if len(self._buffer) > MAX_HEAD:
                    raise ExporterError("a chunk header is too long")
                break
            line = bytes(data[position:line_end])
            position = line_end + 2
            if self._crlf:  # the empty line after a chunk's data
                if line:
                    raise ExporterError("a chunk is longer than its size")
                self._crlf = False
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ExporterError("a chunk header is not a hex size") from None
            if size == 0:
                self.complete = True  # trailers, if any, are not read
            self._left = size
        return pieces


def parse_response(raw: bytes) -> bytes:
    """The body of a complete answer with status 200 (ExporterError otherwise)."""
    pieces: list[bytes] = []
    response = Response(pieces.append)
    response.feed(raw)
    response.finish()
    return b"".join(pieces)


# -- reading ---------------------------------------------------------------------------------------
async def fetch(response: Response, address: tuple[str, int] = EXPORTER) -> None:
    """Read haproxy's exporter into ``response`` (the caller bounds the time)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, EXPORTER_REQUEST)
        buffer = bytearray(READ_SIZE)
        while not response.complete and (size := await loop.sock_recv_into(sock, buffer)):
            response.feed(buffer, size)
    response.finish()

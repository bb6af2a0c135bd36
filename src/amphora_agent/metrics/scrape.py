"""One scrape: haproxy's exporter read with a deadline, IPVS read beside it, the answer rendered.

Runs on the metrics endpoint's own event loop, inside the haproxy namespace (``endpoint``), so the
connection to haproxy's exporter on ``127.0.0.1:9101`` is made there. haproxy answers chunked even
to HTTP/1.0 and closes; the answer is read to the end, bounded in size and time. When the exporter
cannot be read the answer is 502 with the reason, as the existing proxy answers 502.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.health.lvs_stats import LvsSnapshot
from amphora_agent.metrics import l4, render
from amphora_agent.metrics.exposition import CONTENT_TYPE, Family

LOG = logging.getLogger(__name__)
EXPORTER = ("127.0.0.1", 9101)  # the controller's prometheus-exporter-internal-endpoint frontend
EXPORTER_REQUEST = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:9101\r\nUser-Agent: amphora-agent\r\n\r\n"
# Within haproxy's own "timeout server 5s" of the prometheus-exporter-internal backend, so that
# the user gets this agent's 502 and its reason rather than haproxy's 504.
TIMEOUT = 4.0
L4_TIMEOUT = 3.0  # ipvsadm runs twice with 2 s each at worst; a slower IPVS is left out of this scrape
MAX_EXPORTER_BYTES = 128 << 20  # about 2,000 listeners of 5 members; the memory of a 1 GiB VM
READ_SIZE = 1 << 20
MEMINFO = Path("/proc/meminfo")


class ExporterError(Exception):
    """haproxy's exporter could not be read; the message says why."""


@dataclass(frozen=True)
class Answer:
    """What the endpoint answers: a status, its content type and the body in pieces."""

    status: int
    content_type: str
    body: list[bytes]

    @property
    def length(self) -> int:
        """The body's length in bytes."""
        return sum(len(piece) for piece in self.body)


def bad_gateway(reason: str) -> Answer:
    """502 with the reason as text."""
    return Answer(502, "text/plain; charset=utf-8", [f"haproxy's exporter: {reason}\n".encode()])


# -- haproxy's answer (pure) -----------------------------------------------------------------------
def _dechunk(raw: bytes, position: int) -> bytes:
    view = memoryview(raw)
    pieces: list[memoryview] = []
    while True:
        line_end = raw.find(b"\r\n", position)
        if line_end < 0:
            raise ExporterError("the answer ends inside a chunk header")
        try:
            size = int(raw[position:line_end].split(b";", 1)[0], 16)
        except ValueError:
            raise ExporterError("a chunk header is not a hex size") from None
        if size == 0:
            return b"".join(pieces)
        start, end = line_end + 2, line_end + 2 + size
        if raw[end : end + 2] != b"\r\n":
            raise ExporterError("the answer ends inside a chunk")
        pieces.append(view[start:end])
        position = end + 2


def parse_response(raw: bytes) -> bytes:
    """The body of a complete HTTP/1.x answer with status 200 (chunked, sized or up to the close)."""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        raise ExporterError(f"no HTTP answer ({len(raw)} bytes)")
    status_line, *header_lines = raw[:head_end].split(b"\r\n")
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
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        return _dechunk(raw, head_end + 4)
    body = raw[head_end + 4 :]
    length = headers.get(b"content-length")
    if length is not None and (not length.isdigit() or int(length) != len(body)):
        raise ExporterError(f"{len(body)} body bytes where content-length says {length.decode('latin-1')}")
    return body


# -- reading ---------------------------------------------------------------------------------------
async def fetch(address: tuple[str, int] = EXPORTER, limit: int = MAX_EXPORTER_BYTES) -> bytes:
    """haproxy's exporter text (the caller bounds the time); ExporterError or OSError when unreadable."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(EXPORTER_REQUEST)
        pieces: list[bytes] = []
        size = 0
        while piece := await reader.read(READ_SIZE):
            size += len(piece)
            if size > limit:
                raise ExporterError(f"more than {limit} bytes")
            pieces.append(piece)
    finally:
        writer.close()
    return parse_response(b"".join(pieces))


def host_figures(meminfo: Path = MEMINFO) -> tuple[float, float]:
    """(cpu, memory) in percent, as the existing proxy computes them."""
    cpu = render.cpu_percent(os.getloadavg()[0], os.cpu_count() or 1)
    try:
        memory = render.memory_percent(meminfo.read_text())
    except (OSError, ValueError):
        memory = 0.0
    return cpu, memory


class Scraper:
    """Builds one answer: haproxy's exporter renamed, the amphora gauges, the LVS listeners."""

    def __init__(
        self,
        lvs: Callable[[], LvsSnapshot] | None = None,
        exporter: tuple[str, int] = EXPORTER,
        timeout: float = TIMEOUT,
        figures: Callable[[], tuple[float, float]] = host_figures,
        l4_timeout: float = L4_TIMEOUT,
        max_bytes: int = MAX_EXPORTER_BYTES,
    ) -> None:
        self._lvs = lvs
        self._exporter = exporter
        self._timeout = timeout
        self._figures = figures
        self._l4_timeout = l4_timeout
        self._max_bytes = max_bytes
        self._failing: str | None = None

    async def scrape(self) -> Answer:
        """200 with the metrics, or 502 with the reason haproxy's exporter could not be read."""
        loop = asyncio.get_running_loop()
        lvs = loop.run_in_executor(None, self._l4) if self._lvs is not None else None
        try:
            raw = await asyncio.wait_for(fetch(self._exporter, self._max_bytes), self._timeout)
        except (OSError, TimeoutError, ExporterError) as exc:
            return self._failed(str(exc) or f"no answer within {self._timeout:g} s")
        self._recovered()
        added: list[Family] = []
        if lvs is not None:
            try:
                added = await asyncio.wait_for(asyncio.shield(lvs), self._l4_timeout)
            except TimeoutError:
                LOG.warning(
                    "no LVS metrics in this scrape: IPVS did not answer within %g s", self._l4_timeout
                )
        cpu, memory = self._figures()
        return Answer(200, CONTENT_TYPE, render.scrape_body(raw, cpu, memory, added))

    def _l4(self) -> list[Family]:
        """The LVS families; none (logged) when reading them fails."""
        assert self._lvs is not None
        try:
            return l4.families(self._lvs())
        except Exception as exc:  # a reader bug must not cost the haproxy metrics
            LOG.warning("no LVS metrics in this scrape: %s", exc)
            return []

    def _failed(self, reason: str) -> Answer:
        if reason != self._failing:
            host, port = self._exporter
            LOG.warning("Prometheus scrape answered 502: haproxy's exporter at %s:%d: %s", host, port, reason)
        self._failing = reason
        return bad_gateway(reason)

    def _recovered(self) -> None:
        if self._failing is not None:
            LOG.info("haproxy's exporter answers again")
        self._failing = None

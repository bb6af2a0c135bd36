"""One scrape: haproxy's exporter read with a deadline, IPVS read beside it, the answer rendered.

Runs on the metrics endpoint's own event loop, inside the haproxy namespace (``endpoint``), so the
connection to haproxy's exporter on ``127.0.0.1:9101`` is made there. haproxy answers chunked even
to HTTP/1.0 and closes; its answer is rewritten as it arrives (``render.Rewriter``) and the result
is published piece by piece (``Scrape``), so clients receive it while haproxy still writes: for
100 listeners haproxy's text is about 7 MB, and reading, rewriting and sending one after the other
would add up. Everything is bounded in size and time. When the exporter cannot be read the answer
is 502 with the reason, as the existing proxy answers 502; when it fails after answering 200, the
clients' answers are cut off (no final chunk), which Prometheus counts as a failed scrape too.
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
from amphora_agent.metrics.exporter import EXPORTER, MAX_EXPORTER_BYTES, ExporterError, Response, fetch
from amphora_agent.metrics.exposition import CONTENT_TYPE, Family

LOG = logging.getLogger(__name__)
# Within haproxy's own "timeout server 5s" of the prometheus-exporter-internal backend, so that
# the user gets this agent's 502 and its reason rather than haproxy's 504.
TIMEOUT = 4.0
L4_TIMEOUT = 3.0  # ipvsadm runs twice with 2 s each at worst; a slower IPVS is left out of this scrape
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Answer:
    """A whole answer: a status, its content type and the body in pieces."""

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


class Scrape:
    """One scrape in progress, shared by every client that asks meanwhile.

    ``status`` is None until haproxy's exporter has answered (or failed); ``pieces[:released]`` may
    be sent; ``done`` when every piece is there, ``error`` when the answer was cut off.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_type = CONTENT_TYPE
        self.pieces: list[bytes] = []
        self.released = 0
        self.done = False
        self.error: str | None = None
        self._event = asyncio.Event()

    @property
    def finished(self) -> bool:
        """Whether nothing more will come."""
        return self.done or self.error is not None

    def changed(self) -> asyncio.Event:
        """An event set at the next change (take it before looking, then wait on it)."""
        return self._event

    def notify(self) -> None:
        """Wake the clients waiting for a change."""
        self._event.set()
        self._event = asyncio.Event()

    def answer(self, answer: Answer) -> None:
        """A whole answer at once (the 502)."""
        self.status, self.content_type = answer.status, answer.content_type
        self.pieces[:] = answer.body
        self.released, self.done = len(self.pieces), True
        self.notify()

    def collected(self) -> Answer:
        """The whole answer (once ``done``)."""
        return Answer(self.status or 502, self.content_type, list(self.pieces))


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
        """One whole answer: 200 with the metrics, or 502 with the reason (tests and tools)."""
        scrape = Scrape()
        await self.run(scrape)
        if scrape.error is not None:
            return bad_gateway(scrape.error)
        return scrape.collected()

    async def run(self, scrape: Scrape) -> None:
        """Fill ``scrape``: the gauges, then haproxy's families as they are rewritten; never raises."""
        loop = asyncio.get_running_loop()
        rewriter = render.Rewriter(scrape.pieces)
        lvs = None
        if self._lvs is not None:
            lvs = loop.run_in_executor(None, self._l4)
            lvs.add_done_callback(lambda done: self._place(rewriter, scrape, done.result()))
        else:
            rewriter.add([])
        scrape.pieces.append(render.gauges(*self._figures()))
        try:
            response = Response(lambda data: self._feed(rewriter, scrape, data), self._max_bytes)
            await asyncio.wait_for(fetch(response, self._exporter), self._timeout)
        except (OSError, TimeoutError, ExporterError) as exc:
            self._failed(scrape, str(exc) or f"no answer within {self._timeout:g} s")
            return
        except Exception as exc:  # a bug must not leave the clients waiting
            LOG.exception("Prometheus scrape failed")
            self._failed(scrape, f"internal error: {exc}")
            return
        self._recovered()
        scrape.status = 200  # an empty body too
        if lvs is not None and not lvs.done():
            try:
                await asyncio.wait_for(asyncio.shield(lvs), self._l4_timeout)
            except TimeoutError:
                LOG.warning(
                    "no LVS metrics in this scrape: IPVS did not answer within %g s", self._l4_timeout
                )
                self._place(rewriter, scrape, [])
        rewriter.finish()
        scrape.released, scrape.done = len(scrape.pieces), True
        scrape.notify()

    def _feed(self, rewriter: render.Rewriter, scrape: Scrape, data: bytes) -> None:
        """haproxy's 200 has come: the clients may start; each rewritten family is released."""
        if scrape.status is None:
            scrape.status = 200
        rewriter.feed(data)
        if rewriter.placed:
            scrape.released = len(scrape.pieces)
        scrape.notify()

    def _place(self, rewriter: render.Rewriter, scrape: Scrape, families: list[Family]) -> None:
        """The LVS families are known: put them in, and release what is rewritten so far."""
        if rewriter.placed or scrape.finished:
            return
        rewriter.add(families)
        if scrape.status == 200:
            scrape.released = len(scrape.pieces)
            scrape.notify()

    def _l4(self) -> list[Family]:
        """The LVS families; none (logged) when reading them fails."""
        assert self._lvs is not None
        try:
            return l4.families(self._lvs())
        except Exception as exc:  # a reader bug must not cost the haproxy metrics
            LOG.warning("no LVS metrics in this scrape: %s", exc)
            return []

    def _failed(self, scrape: Scrape, reason: str) -> None:
        """502 with the reason, or the answer cut off when the 200 has gone out already."""
        if reason != self._failing:
            host, port = self._exporter
            LOG.warning("Prometheus scrape failed: haproxy's exporter at %s:%d: %s", host, port, reason)
        self._failing = reason
        if scrape.status is None:
            scrape.answer(bad_gateway(reason))
        else:
            scrape.error = reason
            scrape.notify()

    def _recovered(self) -> None:
        if self._failing is not None:
            LOG.info("haproxy's exporter answers again")
        self._failing = None

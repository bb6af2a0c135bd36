"""One scrape and the HTTP endpoint, against real sockets: haproxy's answer, deadlines, 502, sharing.

The exporter here is a small asyncio server playing haproxy (chunked answers, silence, refusals);
the real haproxy is in ``tests/integration/test_metrics.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amphora_agent.health import lvs_stats
from amphora_agent.metrics import endpoint
from amphora_agent.metrics.exporter import ExporterError, Response, parse_response
from amphora_agent.metrics.exposition import CONTENT_TYPE, parse
from amphora_agent.metrics.scrape import Answer, Scrape, Scraper, bad_gateway

DATA = Path(__file__).resolve().parents[1] / "data" / "prometheus"
HAPROXY_26 = (DATA / "haproxy-2.6-prometheus-cfg.txt").read_bytes()
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chunked(body: bytes, size: int = 7000) -> bytes:
    """``body`` in haproxy's chunked framing."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (
            HEAD + b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + chunked(b"a 1\nb 2\n", 3),
            b"a 1\nb 2\n",
        ),
        (HEAD + b"content-length: 4\r\n\r\nx 1\n", b"x 1\n"),
        (HEAD + b"\r\nup to the close\n", b"up to the close\n"),
        (HEAD + b"Transfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nx 12\n\r\n0\r\n\r\n", b"x 12\n"),
    ],
)
def test_haproxys_answer_is_read_in_every_framing(raw: bytes, body: bytes) -> None:
    """Chunked (haproxy's way, even to HTTP/1.0), sized, or up to the close."""
    assert parse_response(raw) == body


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", "answered HTTP/1.1 503"),
        (b"", "no HTTP answer"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        (HEAD + b"transfer-encoding: chunked\r\n\r\n10\r\nshort", "ends inside a chunk"),
        (HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nx 12\n\r\n", "ends inside a chunk header"),
        (HEAD + b"transfer-encoding: chunked\r\n\r\nzz\r\n", "not a hex size"),
        (HEAD + b"content-length: 9\r\n\r\nx 1\n", "content-length says 9"),
    ],
)
def test_an_answer_that_is_not_a_complete_200_is_refused(raw: bytes, reason: str) -> None:
    """A partial, failed or foreign answer is an ExporterError with the reason, never half the metrics."""
    with pytest.raises(ExporterError, match=reason):
        parse_response(raw)


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, int]]:
    """A server on a free loopback port for the duration."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()


def haproxy(body: bytes, status: bytes = b"200 OK", delay: float = 0.0) -> Handler:
    """A handler answering like haproxy's exporter: reads the request, answers chunked, closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 " + status + b"\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        writer.write(chunked(body))
        await writer.drain()
        writer.close()

    return handle


def fixed_figures() -> tuple[float, float]:
    """cpu 50 %, memory 23.5 %."""
    return 50.0, 23.5


def test_a_scrape_renames_haproxys_answer_and_adds_the_gauges() -> None:
    """200, the Prometheus content type, the gauges first, octavia names only."""

    async def run() -> Answer:
        async with serving(haproxy(HAPROXY_26)) as address:
            return await Scraper(exporter=address, figures=fixed_figures).scrape()

    answer = asyncio.run(run())
    assert (answer.status, answer.content_type) == (200, CONTENT_TYPE)
    text = b"".join(answer.body).decode()
    assert text.startswith("# HELP octavia_loadbalancer_cpu ")
    assert "octavia_loadbalancer_memory 23.5\n" in text
    assert all(name.startswith("octavia_") for name in parse(text).families())


def test_lvs_families_join_the_answer() -> None:
    """A running UDP listener's status comes with haproxy's listeners, in the same family."""

    async def run() -> Answer:
        async with serving(haproxy(HAPROXY_26)) as address:
            lvs = lambda: lvs_stats.LvsSnapshot(("u-1",))  # noqa: E731 - a one-line fake source
            return await Scraper(lvs, exporter=address, figures=fixed_figures).scrape()

    found = parse(b"".join(asyncio.run(run()).body).decode())
    listeners = {s.labels["listener"] for s in found.samples if s.name == "octavia_listener_status"}
    assert "u-1" in listeners and len(listeners) == 3
    assert len(found.families()) == len(set(found.families()))


def test_a_failing_lvs_reader_costs_only_the_lvs_families() -> None:
    """A reader that raises: haproxy's metrics still answer 200."""

    def broken() -> lvs_stats.LvsSnapshot:
        raise RuntimeError("reader bug")

    async def run() -> Answer:
        async with serving(haproxy(HAPROXY_26)) as address:
            return await Scraper(broken, exporter=address, figures=fixed_figures).scrape()

    assert asyncio.run(run()).status == 200


def test_a_slow_lvs_reader_is_left_out_after_its_deadline() -> None:
    """IPVS that does not answer within ``l4_timeout``: the scrape answers without it, in time."""

    def slow() -> lvs_stats.LvsSnapshot:
        time.sleep(1.0)
        return lvs_stats.LvsSnapshot(("u-1",))

    async def run() -> tuple[Answer, float]:
        async with serving(haproxy(HAPROXY_26)) as address:
            started = time.monotonic()
            answer = await Scraper(slow, exporter=address, figures=fixed_figures, l4_timeout=0.2).scrape()
            return answer, time.monotonic() - started

    answer, took = asyncio.run(run())
    assert answer.status == 200 and took < 0.9
    assert b'listener="u-1"' not in b"".join(answer.body)


def free_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never answers (closes when the test's loop ends)."""
    try:
        await asyncio.sleep(30)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (None, "Connect call failed"),
        (silent, "no answer within 0.3 s"),
        (haproxy(b"", b"503 Service Unavailable"), "answered HTTP/1.1 503"),
    ],
)
def test_an_unreadable_exporter_gives_502_in_time(handler: Handler | None, reason: str) -> None:
    """Refused, silent or failing: 502 with the reason, within the deadline (never a hang)."""

    async def run() -> tuple[Answer, float]:
        started = time.monotonic()
        if handler is None:
            answer = await Scraper(exporter=("127.0.0.1", free_port()), timeout=0.3).scrape()
        else:
            async with serving(handler) as address:
                answer = await Scraper(exporter=address, timeout=0.3).scrape()
        return answer, time.monotonic() - started

    answer, took = asyncio.run(run())
    assert answer.status == 502 and took < 1.0
    assert reason in b"".join(answer.body).decode()


def test_an_oversized_answer_is_refused() -> None:
    """More than the bound: 502, the rest is not read into memory."""

    async def run() -> Answer:
        async with serving(haproxy(HAPROXY_26)) as address:
            return await Scraper(exporter=address, max_bytes=10_000).scrape()

    answer = asyncio.run(run())
    assert answer.status == 502 and b"more than 10000 bytes" in answer.body[0]


# -- the HTTP side --------------------------------------------------------------------------------
class StagedScraper(Scraper):
    """Publishes a fixed answer in two steps ``delay`` apart (or a 502, or a cut); counts the runs."""

    def __init__(self, delay: float = 0.0, status: int = 200, cut: bool = False) -> None:
        super().__init__()
        self.delay, self.status, self.cut, self.count = delay, status, cut, 0

    async def run(self, scrape: Scrape) -> None:
        """200 and the first piece, then the second piece and done (or a cut); or a whole 502."""
        self.count += 1
        await asyncio.sleep(self.delay)
        if self.status != 200:
            scrape.answer(bad_gateway("answered HTTP/1.1 503 Service Unavailable"))
            return
        scrape.status = 200
        scrape.pieces += [b"octavia_loadbalancer_cpu ", b"1.0\n"]
        scrape.released = 2
        scrape.notify()
        await asyncio.sleep(self.delay)
        if self.cut:
            scrape.error = "haproxy went away"
        else:
            scrape.pieces.append(b"octavia_loadbalancer_memory 2.0\n")
            scrape.released, scrape.done = 3, True
        scrape.notify()


async def exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` and read the whole answer (the server closes)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    try:
        return await reader.read()
    except ConnectionResetError:
        return b"reset"
    finally:
        writer.close()


def run_server(scraper: Scraper, requests: list[bytes]) -> list[bytes]:
    """The endpoint's server on a free port, the requests sent concurrently, their answers."""

    async def run() -> list[bytes]:
        server = await endpoint.MetricsServer(scraper).start(endpoint.listening_socket(("127.0.0.1", 0)))
        address = server.sockets[0].getsockname()[:2]
        try:
            return list(await asyncio.gather(*(exchange(address, r) for r in requests)))
        finally:
            server.close()

    return asyncio.run(run())


GET = b"GET /metrics HTTP/1.1\r\nHost: 198.51.100.30:9100\r\n\r\n"
BODY = b"octavia_loadbalancer_cpu 1.0\noctavia_loadbalancer_memory 2.0\n"


def test_get_streams_the_proxys_headers_chunked_and_closes() -> None:
    """Status, cache-control, content type, chunks as the answer grows, ``connection: close``."""
    (answer,) = run_server(StagedScraper(delay=0.05), [GET])
    assert answer == (
        b"HTTP/1.1 200 OK\r\ncache-control: no-cache\r\ncontent-type: text/plain; version=0.0.4\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        b"1d\r\noctavia_loadbalancer_cpu 1.0\n\r\n20\r\noctavia_loadbalancer_memory 2.0\n\r\n0\r\n\r\n"
    )
    assert parse_response(answer) == BODY


def test_an_http_10_client_gets_the_body_up_to_the_close() -> None:
    """HTTP/1.0 knows no chunks: the body is sent as it is and ends with the connection."""
    (answer,) = run_server(StagedScraper(), [b"GET / HTTP/1.0\r\n\r\n"])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head and body == BODY


@pytest.mark.parametrize(
    ("request_bytes", "start", "body"),
    [
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n", b""),
        (b"POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n", b"HTTP/1.1 405 ", b"GET or HEAD only\n"),
    ],
)
def test_head_and_other_methods(request_bytes: bytes, start: bytes, body: bytes) -> None:
    """HEAD gets the headers alone; any other method 405 with ``allow``."""
    (answer,) = run_server(StagedScraper(), [request_bytes])
    _, _, rest = answer.partition(b"\r\n\r\n")
    assert answer.startswith(start) and rest == body


def test_502_is_passed_on_whole() -> None:
    """The scrape's 502 is the client's 502, sized, with the reason, without ``cache-control``."""
    (answer,) = run_server(StagedScraper(status=502), [GET])
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"cache-control" not in answer
    assert b"content-length: 62\r\n" in answer and answer.endswith(b"503 Service Unavailable\n")


def test_an_answer_cut_after_the_200_ends_without_the_last_chunk() -> None:
    """haproxy failing half-way: the client sees an incomplete answer, never a complete-looking one."""
    (answer,) = run_server(StagedScraper(delay=0.05, cut=True), [GET])
    with pytest.raises(ExporterError):
        parse_response(answer)


def test_concurrent_scrapes_share_one_reading() -> None:
    """Ten clients at once: one scrape of haproxy, ten whole answers."""
    scraper = StagedScraper(delay=0.1)
    answers = run_server(scraper, [GET] * 10)
    assert scraper.count == 1
    assert all(parse_response(a) == BODY for a in answers)


def test_a_scrape_that_ends_unfinished_lets_no_client_wait() -> None:
    """A scraper that raises (a bug): the client's connection is closed, at once."""

    class Broken(Scraper):
        async def run(self, scrape: Scrape) -> None:
            raise RuntimeError("bug")

    started = time.monotonic()
    assert run_server(Broken(), [GET]) == [b""]
    assert time.monotonic() - started < 2.0


def test_a_request_head_too_large_or_never_finished_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An oversized head is closed at once, a silent client after the request deadline; no scrape."""
    monkeypatch.setattr(endpoint, "REQUEST_TIMEOUT", 0.2)
    scraper = StagedScraper()
    huge = b"GET / HTTP/1.1\r\nX: " + b"a" * (endpoint.MAX_REQUEST_HEAD + 10) + b"\r\n\r\n"
    started = time.monotonic()
    answers = run_server(scraper, [huge, b"GET / HTTP/1.1\r\n"])
    assert answers == [b"", b""] and scraper.count == 0
    assert time.monotonic() - started < 2.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 20000), max_size=30), st.integers(1, 9000))
def test_haproxys_answer_read_in_any_pieces(cuts: list[int], chunk: int) -> None:
    """Any chunk size, any recv boundaries (inside a chunk header or its CRLF too): the same body."""
    body = HAPROXY_26[:20000]
    raw = HEAD + b"transfer-encoding: chunked\r\n\r\n" + chunked(body, chunk)
    pieces: list[bytes] = []
    response = Response(pieces.append)
    bounds = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    for start, end in itertools.pairwise(bounds):
        buffer = bytearray(raw[start:end] + b"garbage after the received size")
        response.feed(buffer, end - start)
    response.finish()
    assert b"".join(pieces) == body

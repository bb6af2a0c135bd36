"""``127.0.0.1:9102`` inside the haproxy namespace: the listener the controller's PROMETHEUS backend calls.

The existing amphora runs a second Python process for it (``octavia-prometheus-proxy``, one thread
per scrape). Here a thread of the agent joins the haproxy namespace and runs a small asyncio HTTP
server there, so its listening socket and its connections to haproxy's exporter live in that
namespace while the API and the heartbeat run untouched on the agent's own loop. Concurrent scrapes
share one reading of haproxy's exporter (``Scrape``), streamed to each client as it is rewritten;
each connection is bounded in time, and a slow client holds back only its own connection.

``MetricsEndpoint.run`` (a task of the agent's loop) looks at the namespace once a second: when it
appears or is re-created (a new inode), the serving thread is replaced by one in the current
namespace, and the old one leaves the deleted namespace so that it can be freed. When the port is
taken (the old proxy still running during an upgrade in place) the thread retries until it is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from amphora_agent.metrics.scrape import Scrape, Scraper
from amphora_agent.system import netns

LOG = logging.getLogger(__name__)
ADDRESS = ("127.0.0.1", 9102)  # the controller's prometheus-exporter-internal backend server
WATCH_INTERVAL = 1.0
BIND_RETRY = 5.0
REQUEST_TIMEOUT = 10.0  # to send the request head
WRITE_TIMEOUT = 30.0  # to take the answer
STALL_TIMEOUT = 30.0  # a scrape ends within its own deadlines; this only guards against a bug
MAX_REQUEST_HEAD = 16 << 10
MAX_CONNECTIONS = 64
SEND_BUFFER = 1 << 20  # bytes an answer may have waiting for its client before the next piece
JOIN_TIMEOUT = 5.0
REASONS = {200: "OK", 405: "Method Not Allowed", 502: "Bad Gateway", 503: "Service Unavailable"}


def response_head(
    status: int, content_type: str, length: int | None, extra: str = "", chunked: bool = True
) -> bytes:
    """Status line and headers: the proxy's ``cache-control`` and content type, ``connection: close``;
    a body of unknown length goes chunked (or, for HTTP/1.0, up to the close)."""
    cache = "cache-control: no-cache\r\n" if status == 200 else ""
    size = f"content-length: {length}\r\n" if length is not None else ""
    size = "transfer-encoding: chunked\r\n" if length is None and chunked else size
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n{cache}content-type: {content_type}\r\n"
        f"{size}{extra}connection: close\r\n\r\n"
    ).encode()


class MetricsServer:
    """The HTTP side, on the serving thread's loop: any GET (or HEAD) path answers the metrics."""

    def __init__(self, scraper: Scraper) -> None:
        self._scraper = scraper
        self._scrape: Scrape | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.scrapes = 0

    async def start(self, sock: socket.socket) -> asyncio.Server:
        """Serve on the listening ``sock`` (request heads beyond the bound are refused)."""
        return await asyncio.start_server(self.handle, sock=sock, limit=MAX_REQUEST_HEAD)

    def current(self) -> Scrape:
        """The scrape in progress, or a new one: concurrent requests share one reading of haproxy."""
        if self._scrape is None or self._scrape.finished:
            self._scrape = Scrape()
            scrape = self._scrape
            task = asyncio.ensure_future(self._scraper.run(scrape))
            self._tasks.add(task)  # kept until done: a client leaving does not cancel it
            task.add_done_callback(lambda done: self._settle(scrape, done))
            self.scrapes += 1
        return self._scrape

    def _settle(self, scrape: Scrape, task: asyncio.Task[None]) -> None:
        """A scrape has ended: forget it (its clients hold it until they are done), and cut it off if
        its task ended without finishing it, so that no client waits on."""
        self._tasks.discard(task)
        if self._scrape is scrape:
            self._scrape = None  # the answer's megabytes go with its last client, not the next scrape
        if not scrape.finished:
            if not task.cancelled() and task.exception() is not None:
                LOG.error("Prometheus scrape failed", exc_info=task.exception())
            scrape.error = "the scrape ended unfinished"
            scrape.notify()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, then close (as the existing proxy does)."""
        if self.connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method = head.split(b" ", 1)[0]
            if method in (b"GET", b"HEAD"):
                chunked = not head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
                await self._answer(writer, self.current(), method == b"GET", chunked)
            else:
                refused = b"GET or HEAD only\n"
                text = "text/plain; charset=utf-8"
                writer.write(response_head(405, text, len(refused), "allow: GET, HEAD\r\n") + refused)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a slow, silent, oversized or vanished client: just close
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, scrape: Scrape, body: bool, chunked: bool) -> None:
        """The scrape's answer as it is produced: each batch of released pieces one chunk (HTTP/1.0:
        the body up to the close, which then cannot tell a cut answer; Prometheus speaks HTTP/1.1)."""
        while scrape.status is None and scrape.error is None:
            await asyncio.wait_for(scrape.changed().wait(), STALL_TIMEOUT)
        if scrape.status is None:
            return  # cut off before it began: close without an answer
        if scrape.status != 200:
            await scrape_done(scrape)
            writer.write(response_head(scrape.status, scrape.content_type, sum(map(len, scrape.pieces))))
            for piece in scrape.pieces if body else ():
                writer.write(piece)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            return
        writer.write(response_head(200, scrape.content_type, None, chunked=chunked))
        sent = 0
        while body:
            changed = scrape.changed()
            batch = scrape.pieces[sent : scrape.released]
            if batch:
                size = sum(map(len, batch))
                if chunked and size:  # a chunk of size 0 would end the answer
                    writer.write(b"%x\r\n" % size)
                for piece in batch:  # piece by piece: at most SEND_BUFFER waits in memory, not 5 MB
                    writer.write(piece)
                    if writer.transport.get_write_buffer_size() > SEND_BUFFER:
                        async with asyncio.timeout(WRITE_TIMEOUT):
                            await writer.drain()
                if chunked and size:
                    writer.write(b"\r\n")
                sent += len(batch)
            elif scrape.done:
                break
            elif scrape.error is not None:
                writer.transport.abort()  # no final chunk: the client sees the answer cut off
                return
            else:
                async with asyncio.timeout(STALL_TIMEOUT):  # not wait_for: no task per wait
                    await changed.wait()
        if body and chunked:
            writer.write(b"0\r\n\r\n")
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)


async def scrape_done(scrape: Scrape) -> None:
    """Wait until nothing more will come."""
    while not scrape.finished:
        await asyncio.wait_for(scrape.changed().wait(), STALL_TIMEOUT)


def listening_socket(address: tuple[str, int]) -> socket.socket:
    """A TCP listener in the calling thread's namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ServingThread(threading.Thread):
    """A thread inside ``namespace`` running the metrics server until ``stop``."""

    def __init__(self, namespace: str, scraper: Scraper, address: tuple[str, int] = ADDRESS) -> None:
        super().__init__(name=f"metrics-{namespace}", daemon=True)
        self.namespace = namespace
        self.address = address
        self.server = MetricsServer(scraper)
        self.listening = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def run(self) -> None:
        """Join the namespace, then serve; a namespace that vanished ends the thread (logged)."""
        try:
            netns.enter(self.namespace)
        except OSError as exc:
            LOG.warning("metrics endpoint not started: cannot enter namespace %s: %s", self.namespace, exc)
            return
        asyncio.run(self._serve())

    def stop(self) -> None:
        """Ask the thread to close its listener and end (it does within a moment)."""
        with self._lock:
            self._stopped = True
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has just ended
                loop.call_soon_threadsafe(wake.set)

    async def _serve(self) -> None:
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        # one worker for the IPVS reads: its thread starts from this one, so it is in the namespace
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-lvs"))
        with self._lock:
            if self._stopped:
                return
            self._loop, self._wake = loop, wake
        server = await self._bind(wake)
        if server is None:
            return
        where = f"{self.address[0]}:{self.address[1]} in namespace {self.namespace}"
        LOG.info("serving Prometheus metrics on %s", where)
        self.listening.set()
        await wake.wait()
        server.close()
        LOG.info("stopped serving Prometheus metrics on %s", where)

    async def _bind(self, wake: asyncio.Event) -> asyncio.Server | None:
        """The server, once the port is free; None when stopped first."""
        said = False
        while not wake.is_set():
            try:
                sock = listening_socket(self.address)
            except OSError as exc:
                if not said:
                    LOG.warning(
                        "metrics endpoint %s:%d in %s not open yet (%s); retrying every %g s",
                        *self.address,
                        self.namespace,
                        exc.strerror or exc,
                        BIND_RETRY,
                    )
                    said = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), BIND_RETRY)
                continue
            return await self.server.start(sock)
        return None


class MetricsEndpoint:
    """Keeps one serving thread in the current haproxy namespace (the agent's loop runs ``run``)."""

    def __init__(
        self,
        namespace: Callable[[], str],
        scraper: Scraper,
        address: tuple[str, int] = ADDRESS,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self._namespace = namespace
        self._scraper = scraper
        self._address = address
        self._interval = interval
        self._thread: ServingThread | None = None
        self._serving: tuple[str, tuple[int, int]] | None = None

    @property
    def thread(self) -> ServingThread | None:
        """The current serving thread (tests and benchmarks wait on its ``listening``)."""
        return self._thread

    def follow(self) -> None:
        """One look at the namespace: start, replace or stop the serving thread as it requires."""
        name = self._namespace()
        identity = netns.identity(name)
        alive = self._thread is not None and self._thread.is_alive()
        if alive and self._serving == (name, identity):
            return
        if self._thread is not None:
            self._thread.stop()  # in a namespace that is gone or no longer ours
            self._thread = None
        self._serving = None
        if identity is None:
            return
        self._thread = ServingThread(name, self._scraper, self._address)
        self._thread.start()
        self._serving = (name, identity)

    def close(self) -> None:
        """Stop serving and wait a moment for the thread."""
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(JOIN_TIMEOUT)
            self._thread = None

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the namespace every ``interval`` until ``stop`` is set, then close."""
        try:
            while not stop.is_set():
                try:
                    self.follow()
                except Exception:  # the loop must outlive any single failure
                    LOG.exception("metrics endpoint: following namespace failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
        finally:
            await asyncio.to_thread(self.close)

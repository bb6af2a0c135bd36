"""``127.0.0.1:9102`` inside the haproxy namespace: the listener the controller's PROMETHEUS backend calls.

The existing amphora runs a second Python process for it (``octavia-prometheus-proxy``, one thread
per scrape). Here a thread of the agent joins the haproxy namespace and runs a small asyncio HTTP
server there, so its listening socket and its connections to haproxy's exporter live in that
namespace while the API and the heartbeat run untouched on the agent's own loop. Concurrent scrapes
share one reading of haproxy's exporter; each connection is bounded in time and size.

``MetricsEndpoint.run`` (a task of the agent's loop) watches the namespace once a second: when it
appears, is re-created (a new inode) or renamed by a new agent config, the serving thread is
replaced by one in the current namespace. When the port is taken (the old proxy still running
during an upgrade in place) the thread retries until it is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from amphora_agent.metrics.scrape import Answer, Scraper
from amphora_agent.system import netns

LOG = logging.getLogger(__name__)
ADDRESS = ("127.0.0.1", 9102)  # the controller's prometheus-exporter-internal backend server
WATCH_INTERVAL = 1.0
BIND_RETRY = 5.0
REQUEST_TIMEOUT = 10.0  # to send the request head
WRITE_TIMEOUT = 30.0  # to take the answer
MAX_REQUEST_HEAD = 16 << 10
MAX_CONNECTIONS = 64
JOIN_TIMEOUT = 5.0
REASONS = {200: "OK", 405: "Method Not Allowed", 502: "Bad Gateway", 503: "Service Unavailable"}


def response_head(answer: Answer, extra: str = "") -> bytes:
    """Status line and headers: the proxy's ``cache-control``, content type and ``connection: close``."""
    reason = REASONS.get(answer.status, "")
    cache = "cache-control: no-cache\r\n" if answer.status == 200 else ""
    return (
        f"HTTP/1.1 {answer.status} {reason}\r\n{cache}content-type: {answer.content_type}\r\n"
        f"content-length: {answer.length}\r\n{extra}connection: close\r\n\r\n"
    ).encode()


class MetricsServer:
    """The HTTP side, on the serving thread's loop: any GET (or HEAD) path answers the metrics."""

    def __init__(self, scraper: Scraper) -> None:
        self._scraper = scraper
        self._inflight: asyncio.Future[Answer] | None = None
        self.connections = 0
        self.scrapes = 0

    async def answer(self) -> Answer:
        """The running scrape's answer, or a new scrape: concurrent requests share one."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._scraper.scrape())
            self.scrapes += 1
        return await asyncio.shield(self._inflight)

    async def start(self, sock: socket.socket) -> asyncio.Server:
        """Serve on the listening ``sock`` (request heads beyond the bound are refused)."""
        return await asyncio.start_server(self.handle, sock=sock, limit=MAX_REQUEST_HEAD)

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
                answer = await self.answer()
                writer.write(response_head(answer))
                if method == b"GET":
                    writer.writelines(answer.body)
            else:
                refused = Answer(405, "text/plain; charset=utf-8", [b"GET or HEAD only\n"])
                writer.write(response_head(refused, "allow: GET, HEAD\r\n") + refused.body[0])
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a slow, silent, oversized or vanished client: just close
        finally:
            self.connections -= 1
            writer.close()


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
        with self._lock:
            if self._stopped:
                return
            self._loop, self._wake = asyncio.get_running_loop(), wake
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

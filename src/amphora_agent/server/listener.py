"""The accept loop: a connection costs almost nothing until it has shown a client certificate.

asyncio's own TLS server allocates a 256 KiB read buffer and an OpenSSL session for every accepted
socket, before a byte arrives: 2,000 idle sockets were 600 MiB, which glibc did not give back. Here a
connection goes through three stages, each bounded:

- **waiting**: accepted, nothing sent yet. Only the socket and a timer (under 1 KiB).
- **handshake**: the client spoke, so TLS starts (a 16 KiB read buffer, not 256 KiB). At most
  ``max_handshakes`` at once: past it the oldest handshake is closed.
- **open**: the handshake verified the client's certificate; the HTTP layer (``connection``) takes over
  with its own deadlines.

``max_connections`` counts all three. At the cap a new connection closes the oldest one that has no
handshake yet, so clients without a certificate cannot lock the controller out; when every connection
is open the new one is closed. A connection without a finished handshake ``handshake_timeout`` after
its accept is closed (looked for twice a second).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import errno
import itertools
import logging
import math
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from amphora_agent.server import memory
from amphora_agent.server.limits import TLS_READ_BUFFER, TLS_SHUTDOWN, Limits

LOG = logging.getLogger(__name__)
ACCEPT_BATCH = 64  # accepts per wake-up, so one flood cannot hold the loop
SWEEP_EVERY = 0.5  # seconds between looks for connections whose handshake is late
REPORT_EVERY = 60.0  # seconds between summaries of refused and timed-out connections
TRIM_BELOW = 16  # give freed memory back once the connections fall under this (after 4 times as many)


class TLSProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS with a read buffer of one record (asyncio allocates 256 KiB per connection)."""

    max_size = TLS_READ_BUFFER
    raw: asyncio.Transport | None = None
    on_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket's transport, to close a handshake that takes too long."""
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Tell the listener, whatever stage the connection was in."""
        try:
            super().connection_lost(exc)
        finally:
            callback, self.on_lost = self.on_lost, None
            if callback is not None:
                callback()


Stage = Literal["waiting", "handshake", "open", "closed"]


@dataclass(eq=False, slots=True)
class Pending:
    """One accepted socket, from its accept to its close (a few hundred bytes until it speaks)."""

    sock: socket.socket
    deadline: float
    stage: Stage = "waiting"
    tls: TLSProtocol | None = None


@dataclass
class Counters:
    """What the listener did since the last summary."""

    accepted: int = 0
    refused: int = 0  # over the cap with every connection open
    evicted: int = 0  # closed to make room for a newer one
    timed_out: int = 0  # no finished handshake in time
    failed: int = 0  # handshake refused (no or a wrong certificate, old TLS, ...)
    peak: int = 0

    def any(self) -> bool:
        """Whether anything worth a log line happened."""
        return bool(self.refused or self.evicted or self.timed_out or self.failed)


@dataclass
class Listener:
    """Accepts on ``sock`` and hands verified TLS connections to ``app_protocol()``."""

    sock: socket.socket
    context: ssl.SSLContext
    limits: Limits
    app_protocol: Callable[[], asyncio.Protocol]
    waiting: dict[Pending, None] = field(default_factory=dict)  # oldest first
    handshaking: dict[Pending, None] = field(default_factory=dict)  # oldest first
    open: int = 0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._report: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._high = 0  # pending connections since the last trim
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections held now, in every stage."""
        return len(self.waiting) + len(self.handshaking) + self.open

    def start(self) -> None:
        """Accept from now on."""
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._accept)
        self._report = self.loop.call_later(REPORT_EVERY, self._summary)

    def close(self) -> None:
        """Stop accepting and close every connection without a finished handshake."""
        self._closed = True
        self.loop.remove_reader(self.sock.fileno())
        for timer in (self._report, self._sweeper):
            if timer is not None:
                timer.cancel()
        for pending in [*self.waiting, *self.handshaking]:
            self._drop(pending)

    # -- accept -------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors or memory: pause rather than spin
                LOG.error("accept failed: %s; pausing the API for one second", exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(1.0, self._resume)
                return
            self._admit(sock)

    def _resume(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _admit(self, sock: socket.socket) -> None:
        """Count the socket against the cap, then wait for its first bytes."""
        self.counters.accepted += 1
        if self.connections >= self.limits.max_connections:
            victim = self._victim()
            if victim is None:
                self.counters.refused += 1
                sock.close()
                return
            self.counters.evicted += 1
            self._drop(victim)
        sock.setblocking(False)
        pending = Pending(sock, self.loop.time() + self.limits.handshake_timeout)
        self.waiting[pending] = None
        self.loop.add_reader(sock.fileno(), self._speaks, pending)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)
        self.counters.peak = max(self.counters.peak, self.connections)
        self._high = max(self._high, self.connections)

    def _victim(self) -> Pending | None:
        """The connection to close for a new one: the oldest that has still said nothing (one that
        has spoken but whose bytes the loop has not seen yet starts its handshake instead), else the
        oldest handshake."""
        while self.waiting:
            oldest = next(iter(self.waiting))
            try:
                spoke = oldest.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                return oldest
            except OSError:
                spoke = False
            if not spoke:
                return oldest  # closed by its client: gone anyway
            self._speaks(oldest)
        return next(iter(self.handshaking), None)

    def _speaks(self, pending: Pending) -> None:
        """The client sent its first bytes: start TLS (closing the oldest handshake if too many)."""
        try:
            closed = pending.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            closed = True
        if closed:  # gone before a word: no TLS for it
            self._drop(pending)
            return
        self.loop.remove_reader(pending.sock.fileno())
        del self.waiting[pending]
        if len(self.handshaking) >= self.limits.max_handshakes:
            self.counters.evicted += 1
            self._drop(next(iter(self.handshaking)))
        self.handshaking[pending] = None
        pending.stage = "handshake"
        waiter: asyncio.Future[None] = self.loop.create_future()
        remaining = math.ceil(max(pending.deadline - self.loop.time(), 0.0))
        tls = TLSProtocol(
            self.loop,
            self.app_protocol(),
            self.context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=remaining + 1,  # a backstop: the listener's own timer closes first
            ssl_shutdown_timeout=TLS_SHUTDOWN,
        )
        tls.on_lost = lambda: self._lost(pending)
        pending.tls = tls
        waiter.add_done_callback(lambda done: self._handshaken(pending, done))
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: tls, pending.sock))
        task.add_done_callback(lambda done: self._wrapped(pending, done))

    def _wrapped(self, pending: Pending, done: asyncio.Task[tuple[asyncio.Transport, TLSProtocol]]) -> None:
        """The socket has its transport (or could not get one)."""
        if done.cancelled() or done.exception() is not None:
            if pending.stage != "closed":
                self._forget(pending)
            pending.sock.close()
        elif pending.stage == "closed":  # dropped while its transport was being made
            done.result()[0].abort()

    def _handshaken(self, pending: Pending, done: asyncio.Future[None]) -> None:
        """The handshake verified the client: the connection is the HTTP layer's now."""
        if done.cancelled() or done.exception() is not None or pending.stage != "handshake":
            return  # refused or closed: ``_lost`` counts it
        self._forget(pending)
        pending.stage = "open"
        pending.tls = None
        self.open += 1

    def _lost(self, pending: Pending) -> None:
        """A connection closed, in whatever stage."""
        if pending.stage == "handshake":
            self.counters.failed += 1  # refused (certificate, TLS version) or given up by the client
            self._forget(pending)
        elif pending.stage == "open":
            self.open -= 1
        pending.stage = "closed"
        self._trim()

    # -- closing ------------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Close the connections whose handshake is late (one timer for all, not one each)."""
        now = self.loop.time()
        late = list(itertools.takewhile(lambda p: p.deadline <= now, self.waiting))
        late += [pending for pending in self.handshaking if pending.deadline <= now]
        for pending in late:
            self.counters.timed_out += 1
            self._drop(pending)
        pending_now = bool(self.waiting or self.handshaking)
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep) if pending_now else None

    def _drop(self, pending: Pending) -> None:
        """Close a connection that has not finished its handshake."""
        stage, tls = pending.stage, pending.tls
        if stage == "waiting":
            self.loop.remove_reader(pending.sock.fileno())
            self._forget(pending)
            pending.sock.close()
        elif stage == "handshake":
            self._forget(pending)
            if tls is not None and tls.raw is not None:
                tls.raw.abort()
        self._trim()

    def _forget(self, pending: Pending) -> None:
        """No longer count ``pending`` as waiting or handshaking; its timer stops."""
        self.waiting.pop(pending, None)
        self.handshaking.pop(pending, None)
        pending.stage = "closed"

    def _trim(self) -> None:
        """After a burst of connections, give the memory they freed back to the system (a second
        later, once the last of them are freed too)."""
        if self._high >= 4 * TRIM_BELOW and self.connections < TRIM_BELOW:
            self._high = 0
            self.loop.call_later(1.0, memory.trim)

    def _summary(self) -> None:
        """One log line a minute about refused, evicted and timed-out connections (never one each)."""
        c = self.counters
        if c.any():
            LOG.warning(
                "API connections in the last %d s: %d accepted, %d closed at the cap of %d (%d of them "
                "the oldest without a handshake), %d without a handshake in %g s, %d handshakes "
                "refused; peak %d, now %d",
                REPORT_EVERY,
                c.accepted,
                c.refused + c.evicted,
                self.limits.max_connections,
                c.evicted,
                c.timed_out,
                self.limits.handshake_timeout,
                c.failed,
                c.peak,
                self.connections,
            )
        self.counters = Counters(peak=self.connections)
        self._report = self.loop.call_later(REPORT_EVERY, self._summary)

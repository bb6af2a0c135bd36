"""HTTP/1.1 on one authenticated TLS connection (h11), feeding the ASGI app, with a deadline on every phase.

A connection waits for a request (``request_timeout`` after the handshake, ``keepalive_timeout``
between requests), reads it (headers and body within ``request_timeout`` of its first byte: 408 or a
close past it), lets the app answer, then waits again. An answer given before the body was read (a
413) is sent with ``Connection: close``; the rest of the body is read and dropped (up to
``drain_limit``, within the same deadline) so that the client, still sending, reads the answer before
the close. A client that stops reading its answer is cut off after ``request_timeout``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import h11

from amphora_agent.server.asgi import Cycle
from amphora_agent.server.limits import HEADER_LIMIT, Limits
from amphora_agent.server.types import CLOSE, App, ErrorBody, Message, phrase

LOG = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where a connection is; each phase but APP has a deadline."""

    IDLE = "waiting for a request"
    READING = "reading a request"
    APP = "answering"
    DRAIN = "dropping an unread body"
    CLOSED = "closed"


class Shared:
    """What every connection of one server shares: the app, limits, error bodies, the live set."""

    def __init__(self, app: App, limits: Limits, error_body: ErrorBody) -> None:
        self.app = app
        self.limits = limits
        self.error_body = error_body
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._date = (0, b"")

    def date(self) -> bytes:
        """The ``Date`` header value, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]


class Connection(asyncio.Protocol):
    """One client connection after its TLS handshake (slots, and futures made only when waited on:
    a few hundred connections must cost little)."""

    __slots__ = (
        "_drained",
        "_paused",
        "_stopping",
        "_timer",
        "_write_timer",
        "_write_waiter",
        "cycle",
        "h11",
        "limits",
        "loop",
        "phase",
        "shared",
        "transport",
    )

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.limits = shared.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEADER_LIMIT)
        self.phase = Phase.IDLE
        self.cycle: Cycle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained = 0
        self._stopping = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Handshake done: the first request is due within ``request_timeout``."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.shared.connections.add(self)
        self._arm(self.limits.request_timeout)

    def data_received(self, data: bytes) -> None:
        """Feed h11; the first byte of a request starts its deadline."""
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.DRAIN:
            self._drained += len(data)
            if self._drained > self.limits.drain_limit:
                self.close()
                return
        elif self.phase is Phase.IDLE:
            self.phase = Phase.READING
            self._arm(self.limits.request_timeout)
        self.h11.receive_data(data)
        self._events()

    def eof_received(self) -> bool | None:
        """The client will send no more: finish what h11 has, then close."""
        if self.phase is not Phase.CLOSED:
            self.h11.receive_data(b"")
            self._events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop every timer; an app still reading or writing sees a disconnect."""
        self.phase = Phase.CLOSED
        self._cancel()
        self.resume_writing()
        self.shared.connections.discard(self)
        if self.cycle is not None:
            self.cycle.disconnect()

    def pause_writing(self) -> None:
        """The client does not read fast enough: it gets ``request_timeout`` to catch up."""
        self._paused = True
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.request_timeout, self.abort)

    def resume_writing(self) -> None:
        """The write buffer drained (or the connection is gone): writers go on."""
        self._paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- state ---------------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _events(self) -> None:
        """Handle every complete h11 event in the buffer."""
        while self.phase is not Phase.CLOSED:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._refuse(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:  # a pipelined request: read it after this answer
                self.pause_reading()
                return
            if isinstance(event, h11.Request):
                if self.phase is Phase.IDLE:  # pipelined: it was in the buffer already
                    self.phase = Phase.READING
                    self._arm(self.limits.request_timeout)
                self._start(event)
            elif isinstance(event, h11.Data):
                if self.phase is not Phase.DRAIN and self.cycle is not None:
                    self.cycle.feed(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._cancel()
                if self.phase is Phase.DRAIN:
                    self.close()
                    return
                self.phase = Phase.APP
                if self.cycle is not None:
                    self.cycle.end()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _start(self, event: h11.Request) -> None:
        """Build the ASGI scope of a request and run the app on it."""
        if len(event.target) + sum(len(name) + len(value) for name, value in event.headers) > HEADER_LIMIT:
            self._refuse(431, "the request line and headers are over 16 KiB")  # arrived in one piece
            return
        raw_path, _, query = event.target.partition(b"?")
        try:
            path = unquote(raw_path.decode("ascii"))
        except UnicodeDecodeError:
            self._refuse(400, "the request target is not ASCII")
            return
        transport = self.transport
        assert transport is not None
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": event.http_version.decode("ascii"),
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "scheme": "https",
            "method": event.method.decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": list(event.headers),
        }
        self.cycle = Cycle(self, scope)
        task = self.loop.create_task(self.cycle.run(self.shared.app))
        self.shared.tasks.add(task)
        task.add_done_callback(self.shared.tasks.discard)

    def responded(self) -> None:
        """The app's answer is out: next request, drain, or close."""
        if self.phase is Phase.CLOSED:
            return
        their, ours = self.h11.their_state, self.h11.our_state
        cycle = self.cycle
        unsent = cycle is not None and cycle.refused_continue  # the client never sends that body
        if their is h11.SEND_BODY and not unsent and not self._stopping:
            self.phase = Phase.DRAIN  # the deadline of the request still runs
            self.resume_reading()
            return
        if their is not h11.DONE or ours is not h11.DONE or self._stopping:
            self.close()
            return
        self.h11.start_next_cycle()
        self.cycle = None
        self.phase = Phase.IDLE
        self._arm(self.limits.keepalive_timeout)
        self.resume_reading()
        self._events()  # a pipelined request already in the buffer

    def _expired(self) -> None:
        """A deadline passed: 408 where a request had begun and nothing was answered, else a close."""
        self._timer = None
        cycle = self.cycle
        if self.phase is Phase.READING and cycle is None:
            self._write_raw(408, "the request headers did not arrive in time")
        elif self.phase is Phase.READING and cycle is not None and not cycle.response_started:
            cycle.answer_now(408, "the request body did not arrive in time")
        LOG.debug("closing a connection (%s) at its deadline", self.phase.value)
        self.close()

    def _refuse(self, status: int, detail: str) -> None:
        """A request h11 cannot read: the API's JSON error, then close."""
        if self.cycle is not None and self.cycle.response_started:
            self.close()
            return
        if not self.send_error(status, detail):
            self._write_raw(status, detail)
        self.close()

    def send_error(self, status: int, detail: str) -> bool:
        """The API's JSON error with ``Connection: close``, framed by h11; False if h11 cannot."""
        body = self.shared.error_body(status, detail)
        length = str(len(body)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length), CLOSE]
        try:
            self.write(
                self.h11.send(h11.Response(status_code=status, headers=headers, reason=phrase(status)))
            )
            self.write(self.h11.send(h11.Data(data=body)))
            self.write(self.h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return False
        return True

    def _write_raw(self, status: int, detail: str) -> None:
        """An answer h11 cannot frame (no request was read): written as bytes."""
        body = self.shared.error_body(status, detail)
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            phrase(status),
            len(body),
        )
        self.write(head + b"connection: close\r\n\r\n" + body)

    # -- transport -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write to the client unless the connection is gone."""
        if self.transport is not None and not self.transport.is_closing() and data:
            self.transport.write(data)

    async def writable(self) -> None:
        """Wait until the client has read enough of what was written."""
        while self._paused and self.phase is not Phase.CLOSED:
            if self._write_waiter is None:
                self._write_waiter = self.loop.create_future()
            await self._write_waiter

    def pause_reading(self) -> None:
        """Stop reading from the client (the app has enough body buffered, or a pipelined request)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the client again."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written is sent."""
        self.phase = Phase.CLOSED
        self._cancel()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what was not sent."""
        self.phase = Phase.CLOSED
        self._cancel()
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """The agent stops: close now when idle, after the current answer otherwise."""
        self._stopping = True
        if self.phase in (Phase.IDLE, Phase.DRAIN):
            self.close()


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple | list) and len(info) >= 2 else None

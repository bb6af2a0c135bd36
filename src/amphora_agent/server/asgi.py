"""One request and its answer as the ASGI app sees them: ``receive`` hands it the body as it arrives,
``send`` writes its answer through h11. The connection (``connection``) owns the deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import h11

from amphora_agent.server.limits import BODY_BUFFER
from amphora_agent.server.types import CLOSE, App, Message, phrase

if TYPE_CHECKING:
    from amphora_agent.server.connection import Connection

LOG = logging.getLogger(__name__)


class Cycle:
    """One request and its answer, as the ASGI app sees them."""

    __slots__ = (
        "_head",
        "_waiter",
        "body",
        "buffered",
        "connection",
        "disconnected",
        "more_body",
        "refused_continue",
        "response_complete",
        "response_started",
        "scope",
    )

    def __init__(self, connection: Connection, scope: Message) -> None:
        self.connection = connection
        self.scope = scope
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.refused_continue = False  # answered a client that waits for "100 Continue"
        self._head = scope["method"] == "HEAD"
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- from the connection -------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Body bytes arrived; reading pauses while the app has not taken BODY_BUFFER of them."""
        if self.disconnected or not data:
            return
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > BODY_BUFFER:
            self.connection.pause_reading()
        self._wake()

    def end(self) -> None:
        """The whole body arrived."""
        self.more_body = False
        self._wake()

    def disconnect(self) -> None:
        """The connection is gone (or timed out): the app's next receive says so."""
        self.disconnected = True
        self._wake()

    def answer_now(self, status: int, detail: str) -> None:
        """Answer for the app (a deadline passed) and tell the app the client is gone."""
        self.response_started = self.response_complete = True
        self.connection.send_error(status, detail)
        self.disconnect()

    # -- ASGI ----------------------------------------------------------------------------------
    async def run(self, app: App) -> None:
        """Run the app; a crash before any answer is a JSON 500."""
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            LOG.exception("%s %s failed in the server", self.scope["method"], self.scope["path"])
            if not self.response_started and not self.disconnected:
                body = self.connection.shared.error_body(500, "")
                await self.send({"type": "http.response.start", "status": 500, "headers": [CLOSE]})
                await self.send({"type": "http.response.body", "body": body})
        finally:
            if not self.response_complete and not self.disconnected:
                self.connection.close()

    async def receive(self) -> Message:
        """The next part of the body, or ``http.disconnect``."""
        conn = self.connection
        if conn.h11.they_are_waiting_for_100_continue and not self.disconnected:
            conn.write(conn.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        while not self.body and self.more_body and not (self.disconnected or self.response_complete):
            conn.resume_reading()
            self._waiter = conn.loop.create_future()
            await self._waiter
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        data = b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        conn.resume_reading()
        return {"type": "http.request", "body": data, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        """Write the answer's head or a part of its body."""
        conn = self.connection
        if not self.disconnected:
            await conn.writable()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.response_started = True
            self.refused_continue = conn.h11.they_are_waiting_for_100_continue
            headers = [(b"date", conn.shared.date()), *message.get("headers", [])]
            if conn.h11.their_state is not h11.DONE and CLOSE not in headers:
                headers.append(CLOSE)  # answered before the body was read: drained, then closed
            status = message["status"]
            response = h11.Response(status_code=status, headers=headers, reason=phrase(status))
            conn.write(conn.h11.send(response))
            return
        if message["type"] != "http.response.body" or self.response_complete:
            raise RuntimeError(f"unexpected {message['type']} after the answer")
        body = b"" if self._head else message.get("body", b"")
        if body:
            conn.write(conn.h11.send(h11.Data(data=body)))
        if not message.get("more_body", False):
            conn.write(conn.h11.send(h11.EndOfMessage()))
            self.response_complete = True
            self._wake()
            conn.responded()

"""The ASGI shapes the server speaks, and the few HTTP constants both of its halves need."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]
ErrorBody = Callable[[int, str], bytes]  # status, detail -> the API's JSON error body
CLOSE = (b"connection", b"close")


@functools.cache
def phrase(status: int) -> bytes:
    """The reason phrase of a status (``Request Timeout``), empty when unknown."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""

"""The API server: accept, TLS, HTTP/1.1 and the ASGI app, with a limit or a deadline on every stage.

``serve`` runs until ``stop`` is set. ``listener`` holds connections until they have authenticated,
``connection`` speaks HTTP on them, ``asgi`` hands each request to the app, ``limits`` names every
bound (docs/hardening.md), and ``memory`` keeps glibc from holding on to what bursts freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from amphora_agent.server import memory
from amphora_agent.server.connection import Connection, Phase, Shared
from amphora_agent.server.limits import SHUTDOWN_GRACE, Limits
from amphora_agent.server.listener import Listener
from amphora_agent.server.types import App, ErrorBody

__all__ = ["Limits", "serve"]
LOG = logging.getLogger(__name__)


async def serve(
    app: App,
    sock: socket.socket,
    context: ssl.SSLContext,
    limits: Limits,
    error_body: ErrorBody,
    stop: asyncio.Event,
    started: Callable[[Listener], None] | None = None,
) -> None:
    """Answer on ``sock`` until ``stop`` is set; requests in progress then get SHUTDOWN_GRACE seconds.

    ``started`` is told the listener once it accepts (tests and benchmarks read its counts).
    """
    memory.configure()
    shared = Shared(app, limits, error_body)
    listener = Listener(sock, context, limits, lambda: Connection(shared))
    listener.start()
    if started is not None:
        started(listener)
    try:
        await stop.wait()
    finally:
        listener.close()
        for connection in list(shared.connections):
            connection.shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                while shared.tasks or any(c.phase is not Phase.CLOSED for c in shared.connections):
                    await asyncio.sleep(0.05)
        for task in list(shared.tasks):
            task.cancel()
        for connection in list(shared.connections):
            connection.abort()

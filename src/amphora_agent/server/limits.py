"""Every limit and deadline of the API server, in one place (docs/hardening.md explains each)."""

from __future__ import annotations

from dataclasses import dataclass

from amphora_agent.settings import Settings

KEEPALIVE = 30.0  # seconds a kept-alive connection waits for its next request (at most the read timeout)
MAX_HANDSHAKES = 128  # TLS handshakes in progress at once; over it the oldest one is closed
TLS_READ_BUFFER = 8 << 10  # half a TLS record; asyncio allocates 256 KiB per connection, up front
TLS_SHUTDOWN = 5.0  # seconds a closing connection waits for the peer's close_notify
HEADER_LIMIT = 16 << 10  # request line and headers, bytes: past it 431
DRAIN_LIMIT = 256 << 20  # bytes of an unread body read and dropped after an early answer (a 413)
BODY_BUFFER = 64 << 10  # body bytes buffered before reading pauses until the app takes them
SHUTDOWN_GRACE = 10.0  # seconds requests in progress may take to finish when the agent stops


@dataclass(frozen=True)
class Limits:
    """The limits one server enforces; ``from_settings`` reads the operator's options."""

    max_connections: int = 1000
    handshake_timeout: float = 10.0
    request_timeout: float = 180.0
    max_handshakes: int = MAX_HANDSHAKES
    drain_limit: int = DRAIN_LIMIT

    @property
    def keepalive_timeout(self) -> float:
        """Idle time between requests on one connection."""
        return min(KEEPALIVE, self.request_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """``agent_max_connections``, ``agent_tls_handshake_timeout``, ``agent_request_read_timeout``."""
        return cls(
            max_connections=settings.agent_max_connections,
            handshake_timeout=float(settings.agent_tls_handshake_timeout),
            request_timeout=float(settings.agent_request_read_timeout),
        )

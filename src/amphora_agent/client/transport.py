"""The client's transport: connection settings, mutual TLS, the controller's retries, error mapping.

Mutual TLS; the agent's certificate is checked against the CA with the **amphora id** as the expected
host name (the TLS SNI name, as the controller's ``assert_hostname``). Connection errors, timeouts,
non-JSON 404s and JSON 404s saying ``No suitable network interface found`` are retried a bounded
number of times; any other error answer raises :class:`AgentAPIError` with the agent's ``message``
and ``details``.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from amphora_agent.client.models import Reply

LOG = logging.getLogger(__name__)
RETRYABLE_404_DETAIL = "No suitable network interface found"


class ClientError(Exception):
    """Anything the client could not do: the base of every client exception."""


class AgentAPIError(ClientError):
    """The agent answered with an error status: ``status``, ``message``, ``details`` and the body."""

    def __init__(self, status: int, message: str, details: str | None = None, body: Any = None) -> None:
        super().__init__(f"{status} {message}" + (f": {details}" if details else ""))
        self.status = status
        self.message = message
        self.details = details
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> AgentAPIError:
        """Read ``message``/``details`` (or the router's ``error``) from an error answer."""
        try:
            body: Any = response.json()
        except ValueError:
            text = response.text.strip()
            return cls(response.status_code, response.reason_phrase or "Error", text[:500] or None, text)
        if not isinstance(body, dict):
            return cls(response.status_code, response.reason_phrase or "Error", str(body)[:500], body)
        message = body.get("message") or body.get("error") or response.reason_phrase or "Error"
        details = body.get("details")
        return cls(response.status_code, str(message), None if details is None else str(details), body)


class AgentUnreachable(ClientError):
    """Every attempt failed to get an answer (connection refused, TLS failure, timeout)."""

    def __init__(self, url: str, attempts: int, cause: str) -> None:
        super().__init__(f"{url}: no answer after {attempts} attempt(s): {cause}")
        self.url = url
        self.attempts = attempts
        self.cause = cause


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries, ``interval`` seconds apart."""

    attempts: int = 3
    interval: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.interval < 0:
            raise ValueError("attempts must be >= 1 and interval >= 0")

    @classmethod
    def controller(cls) -> RetryPolicy:
        """The controller's defaults: 120 attempts, 5 s apart (``connection_max_retries``)."""
        return cls(attempts=120, interval=5.0)


@dataclass(frozen=True)
class Connection:
    """Where the agent is and how to reach it."""

    url: str
    amphora_id: str | None = None
    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = "amphora-agent-client"


def ssl_context(conn: Connection) -> ssl.SSLContext:
    """TLS >= 1.2, the agent checked against ``ca``, our certificate (and key) presented."""
    try:
        ctx = ssl.create_default_context(cafile=str(conn.ca) if conn.ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if conn.client_cert:
            ctx.load_cert_chain(str(conn.client_cert), str(conn.client_key) if conn.client_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"cannot load the TLS files: {exc}") from exc
    return ctx


def seg(value: str) -> str:
    """One path segment, quoted (``:`` kept for IPv6 addresses)."""
    if not value:
        raise ClientError("empty path parameter")
    return quote(value, safe=":@")


def _retryable_404(response: httpx.Response) -> bool:
    """The controller's rule: a non-JSON 404 (agent not up) or the hot-plug-lag 404."""
    if "application/json" not in response.headers.get("content-type", ""):
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, str) and RETRYABLE_404_DETAIL in details


def as_bytes(data: bytes | str) -> bytes:
    """A body as bytes (text is sent as UTF-8)."""
    return data.encode("utf-8") if isinstance(data, str) else data


class Transport:
    """Requests with the controller's retries and error mapping; ``AgentClient`` adds the routes."""

    def __init__(
        self,
        conn: Connection,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = conn
        self._sleep = sleep
        timeout = httpx.Timeout(
            connect=conn.connect_timeout,
            read=conn.read_timeout,
            write=conn.read_timeout,
            pool=conn.connect_timeout,
        )
        verify: ssl.SSLContext | bool = ssl_context(conn) if conn.url.startswith("https:") else False
        self._http = httpx.Client(
            base_url=conn.url.rstrip("/"),
            verify=verify,
            timeout=timeout,
            headers={"User-Agent": conn.user_agent},
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        retry_404: bool = True,
    ) -> httpx.Response:
        """Send one request with the controller's retries; return the final answer (any status)."""
        extensions = {"sni_hostname": self.conn.amphora_id} if self.conn.amphora_id else None
        policy = self.conn.retry
        cause = ""
        response: httpx.Response | None = None
        for attempt in range(1, policy.attempts + 1):
            try:
                response = self._http.request(method, path, content=content, json=json, extensions=extensions)
            except httpx.UnsupportedProtocol as exc:
                raise ClientError(f"{self.conn.url}: {exc}") from exc
            except httpx.TransportError as exc:
                response, cause = None, f"{type(exc).__name__}: {exc}"
            else:
                if not (retry_404 and response.status_code == 404 and _retryable_404(response)):
                    return response
                cause = f"404 {response.text.strip()[:200]}"
            if attempt < policy.attempts:
                LOG.info("%s %s: attempt %d/%d: %s", method, path, attempt, policy.attempts, cause)
                self._sleep(policy.interval)
        if response is not None:
            return response
        raise AgentUnreachable(self.conn.url, policy.attempts, cause)

    def checked(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``request``, with any status of 400 or more raised as ``AgentAPIError``."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AgentAPIError.from_response(response)
        return response

    @staticmethod
    def json_of(response: httpx.Response) -> Any:
        """The JSON body of a success answer (``AgentAPIError`` when it is not JSON)."""
        try:
            return response.json()
        except ValueError as exc:
            raise AgentAPIError(response.status_code, "Invalid JSON reply", response.text[:200]) from exc

    def reply(self, method: str, path: str, **kwargs: Any) -> Reply:
        """A request whose success answer is ``{"message": "OK", "details": ...}``."""
        response = self.checked(method, path, **kwargs)
        body = self.json_of(response)
        if not isinstance(body, dict):
            raise AgentAPIError(response.status_code, "Invalid reply", str(body)[:200], body)
        details = body.get("details")
        return Reply(
            status=response.status_code,
            message=str(body.get("message", "")),
            details=None if details is None else str(details),
            etag=response.headers.get("etag"),
        )

    def amphora_id_or(self, amphora_id: str | None) -> str:
        """``amphora_id``, else the connection's (routes that name the amphora need one)."""
        found = amphora_id or self.conn.amphora_id
        if not found:
            raise ClientError("this call needs the amphora id")
        return found

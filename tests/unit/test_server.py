"""The API server in this process on loopback: cap, handshake deadline, request deadlines, 413, drain.

A real listening socket, real TLS with client certificates and a small ASGI app; each test takes a
few seconds at most (deadlines of 1-2 s). The same behaviour against a real agent in a namespace is
in tests/integration/test_transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from amphora_agent import server
from amphora_agent.api import error_json
from amphora_agent.cli import listen_socket
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.server.listener import Listener
from amphora_agent.server.types import Message, Receive, Send

MAX_BODY = 1 << 20


async def echo_app(scope: Message, receive: Receive, send: Send) -> None:
    """Reads the body (413 JSON past MAX_BODY, as the API does) and answers its size; /nodelay answers
    the socket's TCP_NODELAY."""
    size = 0
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and int(declared) > MAX_BODY:
        await answer(send, 413, {"message": "Request body too large"})
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            await answer(send, 413, {"message": "Request body too large"})
            return
        if not message.get("more_body"):
            break
    await answer(send, 200, {"size": size, "path": scope["path"]})


async def answer(send: Send, status: int, body: dict[str, Any]) -> None:
    """A JSON answer."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@dataclass
class Running:
    """A server running in a thread of its own, and what a client needs."""

    port: int
    client_context: ssl.SSLContext
    listener: Listener | None = None

    def raw(self) -> socket.socket:
        """A TCP connection that never speaks TLS."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def tls(self) -> ssl.SSLSocket:
        """A TLS connection with a valid client certificate, handshake done."""
        return self.client_context.wrap_socket(self.raw(), server_hostname="agent")

    def http(self) -> http.client.HTTPSConnection:
        """A kept-alive HTTPS client."""
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.client_context, timeout=10)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context requiring a client certificate, and a client context that has one."""
    folder = tmp_path_factory.mktemp("certs")
    ca = CertificateAuthority()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "server.pem").write_bytes(ca.issue("agent", server=True).bundle)
    (folder / "client.pem").write_bytes(ca.issue("controller", server=False).bundle)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(str(folder / "ca.pem"))
    server_ctx.load_cert_chain(str(folder / "server.pem"))
    client_ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    client_ctx.load_cert_chain(str(folder / "client.pem"))
    client_ctx.check_hostname = False  # the chain is checked; the name is the amphora id elsewhere
    return server_ctx, client_ctx


@contextlib.contextmanager
def running(certificates: tuple[ssl.SSLContext, ssl.SSLContext], limits: server.Limits) -> Iterator[Running]:
    """``server.serve`` on 127.0.0.1 in a thread; stopped (and joined) afterwards."""
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    started, box = threading.Event(), Running(port, certificates[1])
    loop = asyncio.new_event_loop()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        stop.append(asyncio.Event())

        def listening(listener: Listener) -> None:
            box.listener = listener
            started.set()

        await server.serve(echo_app, sock, certificates[0], limits, error_json, stop[0], listening)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield box
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(20)
        loop.close()
        sock.close()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (EOF or reset), or None if it stays open."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except (ConnectionResetError, ssl.SSLError, OSError):
        pass
    return time.monotonic() - started


def read_answer(sock: socket.socket, seconds: float = 10) -> bytes:
    """Everything the server sends until it closes."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError, TimeoutError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def wait_for(predicate: Callable[[], bool], seconds: float = 5) -> bool:
    """Poll until ``predicate`` holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_connection_that_never_speaks_is_closed_at_the_handshake_deadline(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """No ClientHello: closed after ``handshake_timeout`` (looked for twice a second)."""
    with running(certificates, server.Limits(handshake_timeout=1.0)) as srv, srv.raw() as sock:
        took = closed_within(sock, 5)
        assert took is not None and 0.9 <= took <= 2.0


def test_a_stalled_handshake_is_closed_at_the_same_deadline(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A ClientHello started and never finished: closed at the handshake deadline too."""
    with running(certificates, server.Limits(handshake_timeout=1.0)) as srv, srv.raw() as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        took = closed_within(sock, 5)
        assert took is not None and took <= 2.0


def test_over_the_cap_the_oldest_connection_without_handshake_goes(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """With the cap full of silent sockets a client with a certificate still gets in: the oldest
    silent one is closed for it; the count never exceeds the cap."""
    with running(certificates, server.Limits(max_connections=10)) as srv, contextlib.ExitStack() as stack:
        silent = [stack.enter_context(srv.raw()) for _ in range(10)]
        assert srv.listener is not None and wait_for(lambda: srv.listener.connections == 10)  # type: ignore[union-attr]
        client = srv.http()
        stack.callback(client.close)
        client.request("GET", "/1.0/info")
        assert client.getresponse().status == 200
        assert closed_within(silent[0], 2) is not None
        assert all(closed_within(sock, 0.05) is None for sock in silent[2:])
        assert srv.listener.connections <= 10


def test_when_every_connection_is_authenticated_a_new_one_is_closed(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Authenticated connections are never closed for a newcomer: the newcomer is."""
    with running(certificates, server.Limits(max_connections=3)) as srv, contextlib.ExitStack() as stack:
        kept = [stack.enter_context(srv.tls()) for _ in range(3)]
        assert srv.listener is not None and wait_for(lambda: srv.listener.open == 3)  # type: ignore[union-attr]
        with srv.raw() as extra:
            assert closed_within(extra, 2) is not None
        assert all(closed_within(sock, 0.05) is None for sock in kept)


def test_idle_after_the_handshake_is_closed_at_the_read_timeout(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Handshake done, nothing sent: closed ``request_timeout`` later, without an answer."""
    with running(certificates, server.Limits(request_timeout=1.0)) as srv, srv.tls() as sock:
        started = time.monotonic()
        assert read_answer(sock, 5) == b""
        assert 0.9 <= time.monotonic() - started <= 2.0


def test_headers_sent_one_byte_at_a_time_get_408(certificates: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """Headers still incomplete ``request_timeout`` after their first byte: a JSON 408, then close."""
    with running(certificates, server.Limits(request_timeout=1.0)) as srv, srv.tls() as sock:
        started = time.monotonic()
        for byte in b"GET /1.0/info HTTP/1.1\r\nHost: a":
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - started > 3:
                break
        answer = read_answer(sock, 5)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["http_code"] == 408
        assert time.monotonic() - started <= 2.5


def test_a_trickled_body_gets_408_and_the_app_sees_a_disconnect(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A body that is not complete ``request_timeout`` after the request began: 408, never a 200."""
    with running(certificates, server.Limits(request_timeout=1.0)) as srv, srv.tls() as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 3 and not answer:
            with contextlib.suppress(OSError):
                sock.send(b"x")
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
                answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started <= 2.5


def test_keep_alive_serves_several_requests_then_idles_out(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Requests on one connection each get their answer; idle after them, it closes."""
    with running(certificates, server.Limits(request_timeout=1.0)) as srv:
        client = srv.http()
        for index in range(3):
            client.request("PUT", f"/r{index}", body=b"x" * 1000)
            response = client.getresponse()
            assert json.loads(response.read()) == {"size": 1000, "path": f"/r{index}"}
        sock = client.sock
        assert sock is not None
        assert closed_within(sock, 3) is not None
        client.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_over_the_limit_the_client_reads_the_413(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext], chunked: bool
) -> None:
    """A client still sending a body over the limit reads the JSON 413 (the rest is read and dropped)."""
    size = 8 * MAX_BODY
    with running(certificates, server.Limits()) as srv:
        client = srv.http()
        if chunked:
            client.request("PUT", "/big", body=iter([b"x" * 65536] * (size // 65536)), encode_chunked=True)
        else:
            client.request("PUT", "/big", body=b"x" * size)
        response = client.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"message": "Request body too large"}
        assert response.getheader("connection") == "close"
        client.close()


def test_a_body_over_the_drain_limit_is_cut_off(certificates: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """Dropping an unread body has a limit too: past it the connection is closed."""
    with running(certificates, server.Limits(drain_limit=MAX_BODY)) as srv, srv.tls() as sock:
        sock.sendall(b"PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        assert read_answer(sock, 2).startswith(b"HTTP/1.1 413 ")
        with pytest.raises(OSError):
            for _ in range(1000):
                sock.sendall(b"x" * 65536)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),  # in one piece
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 40000, 431),  # never ending
    ],
    ids=["malformed", "headers-too-big", "headers-unfinished"],
)
def test_a_request_that_cannot_be_read_gets_a_json_error(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext], request_bytes: bytes, status: int
) -> None:
    """What h11 cannot parse is the API's JSON 400; headers over 16 KiB a JSON 431; then close."""
    with running(certificates, server.Limits()) as srv, srv.tls() as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 %d " % status)
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["http_code"] == status


def test_kept_alive_requests_are_not_held_back_by_nagle(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """An answer is written in two parts; TCP_NODELAY on accepted sockets keeps each request far
    under the 40 ms of Nagle's algorithm meeting a delayed ACK."""
    with running(certificates, server.Limits()) as srv:
        client = srv.http()
        times = []
        for _ in range(20):
            started = time.perf_counter()
            client.request("GET", "/")
            client.getresponse().read()
            times.append(time.perf_counter() - started)
        client.close()
        assert sorted(times)[10] < 0.02


def test_stop_closes_idle_connections(certificates: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """Stopping closes a kept-alive idle connection at once."""
    with running(certificates, server.Limits()) as srv:
        client = srv.http()
        client.request("GET", "/")
        assert client.getresponse().read()
        sock = client.sock
    assert sock is not None
    assert closed_within(sock, 2) is not None
    client.close()

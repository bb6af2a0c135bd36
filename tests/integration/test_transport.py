"""A real agent in a namespace against clients that hold connections, dawdle or send too much.

Short deadlines (2 s) keep each test to seconds; ``python -m bench hostile`` runs the long versions
with the default settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.api import MAX_UPLOAD
from lab import namespaces
from lab.configs import rss_mib
from tests.integration.helpers import SINGLE_HTTP_LB, render

pytestmark = pytest.mark.integration

TIMEOUT = 2  # agent_request_read_timeout and agent_tls_handshake_timeout of the agent under test
CAP = 1000


@contextlib.contextmanager
def running_agent(options: dict[str, str]) -> Iterator[namespaces.Amphora]:
    """An agent in its own amphora namespace with these ``[amphora_agent]`` options."""
    with tempfile.TemporaryDirectory(prefix="amp") as path:
        amphora = namespaces.Amphora(Path(path))
        amphora.extra_config = {"amphora_agent": options}
        amphora.create()
        try:
            amphora.start_agent()
            yield amphora
        finally:
            amphora.destroy()


@pytest.fixture(scope="module")
def amp() -> Iterator[namespaces.Amphora]:
    """One agent with 2-second deadlines and a cap of 1,000 connections."""
    options = {
        "agent_request_read_timeout": str(TIMEOUT),
        "agent_tls_handshake_timeout": str(TIMEOUT),
        "agent_max_connections": str(CAP),
    }
    with running_agent(options) as amphora:
        yield amphora


@pytest.fixture(scope="module")
def roomy() -> Iterator[namespaces.Amphora]:
    """One agent with the default deadlines: big uploads on a busy machine need more than 2 s."""
    with running_agent({}) as amphora:
        yield amphora


def agent_pid(amp: namespaces.Amphora) -> int:
    """The agent's pid (``nsenter`` execs it)."""
    assert amp.process is not None
    return amp.process.pid


def raw(amp: namespaces.Amphora) -> socket.socket:
    """A TCP connection to the agent that never starts TLS."""
    return socket.create_connection((amp.mgmt_ip, 9443), timeout=10)


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the agent closes ``sock`` (or resets it); None if still open after ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def everything(sock: socket.socket, limit: float = 10) -> bytes:
    """What the agent sends until it closes."""
    sock.settimeout(limit)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def json_answer(raw_answer: bytes) -> tuple[int, dict[str, object]]:
    """Status and JSON body of a raw HTTP answer."""
    head, _, body = raw_answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def info_ok(amp: namespaces.Amphora) -> bool:
    """A controller with its certificate gets ``GET /1.0/info`` on a new connection."""
    conn = amp.https(timeout=10)
    try:
        conn.request("GET", "/1.0/info")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def test_idle_connections_cost_almost_no_memory(amp: namespaces.Amphora) -> None:
    """1,000 silent connections and 100 authenticated idle ones: under 10 MiB more agent memory."""
    assert info_ok(amp)
    before = rss_mib(agent_pid(amp))
    with contextlib.ExitStack() as stack:
        for _ in range(CAP - 100):
            stack.enter_context(raw(amp))
        for _ in range(100):
            stack.enter_context(amp.tls_socket())
        time.sleep(0.5)
        grown = rss_mib(agent_pid(amp)) - before
    assert grown < 10, f"{grown:.1f} MiB for {CAP} connections"


def test_over_the_cap_the_controller_still_gets_in(amp: namespaces.Amphora) -> None:
    """The cap full of silent sockets: a client with a certificate is served, the oldest silent
    socket is closed for it, the newest stay (until their handshake deadline)."""
    with contextlib.ExitStack() as stack:
        silent = [stack.enter_context(raw(amp)) for _ in range(CAP)]
        time.sleep(0.3)
        assert info_ok(amp)
        assert seconds_until_closed(silent[0], 1) is not None
        assert seconds_until_closed(silent[-1], 0.05) is None


def test_a_connection_that_never_shakes_hands_is_closed(amp: namespaces.Amphora) -> None:
    """Nothing sent after connecting: closed at agent_tls_handshake_timeout."""
    with raw(amp) as sock:
        took = seconds_until_closed(sock, TIMEOUT + 5)
    assert took is not None and took <= TIMEOUT + 1


def test_idle_after_the_handshake_is_closed_within_the_read_timeout(amp: namespaces.Amphora) -> None:
    """Handshake done, nothing sent: closed within agent_request_read_timeout (+5 s the target)."""
    with amp.tls_socket() as sock:
        took = seconds_until_closed(sock, TIMEOUT + 5)
    assert took is not None and took <= TIMEOUT + 1


def test_headers_one_byte_at_a_time_get_a_408(amp: namespaces.Amphora) -> None:
    """A request line and headers trickled byte by byte: 408 (JSON) at the read timeout, then close."""
    with amp.tls_socket() as sock:
        started = time.monotonic()
        for byte in b"GET /1.0/info HTTP/1.1\r\nHost: amphora\r\nUser-Agent: slow":
            with contextlib.suppress(OSError):
                sock.send(bytes([byte]))
            time.sleep(0.25)
            if time.monotonic() - started > TIMEOUT + 1:
                break
        status, body = json_answer(everything(sock))
    assert status == 408 and body["http_code"] == 408
    assert time.monotonic() - started <= TIMEOUT + 2


def test_a_trickled_body_gets_a_408_and_leaves_no_file(amp: namespaces.Amphora) -> None:
    """A config upload whose body trickles in: 408 at the read timeout, never a 202, no temp file left."""
    lb = "0b5e5b51-0000-4000-8000-000000000408"
    with amp.tls_socket() as sock:
        sock.sendall(
            f"PUT /1.0/loadbalancer/{amp.amphora_id}/{lb}/haproxy HTTP/1.1\r\n"
            "Host: amphora\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        started, answer = time.monotonic(), b""
        sock.settimeout(0.25)
        while not answer and time.monotonic() - started < TIMEOUT + 2:
            with contextlib.suppress(OSError):
                sock.send(b"#")
            with contextlib.suppress(TimeoutError, ssl.SSLError):
                answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert namespaces.wait_until(lambda: not list(amp.base.rglob(".*.tmp-*")), 2)
    assert not (amp.base / lb).exists()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_over_the_limit_reads_the_json_413(roomy: namespaces.Amphora, chunked: bool) -> None:
    """A 20 MiB config, sent whole before reading: the client reads the 413 and its JSON body."""
    amp = roomy
    size, conn = 20 << 20, amp.https()
    path = f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy"
    try:
        if chunked:
            conn.request("PUT", path, body=iter([b"#" * (1 << 20)] * 20), encode_chunked=True)
        else:
            conn.request("PUT", path, body=b"#" * size)
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413
    assert body == {"message": "Request body too large", "details": f"the limit is {MAX_UPLOAD} bytes"}
    assert not list(amp.base.rglob(".*.tmp-*"))


def test_uploads_at_the_limit_are_streamed_to_disk(roomy: namespaces.Amphora, fixtures_dir: Path) -> None:
    """Eight concurrent 16 MiB configs: stored byte for byte with their md5 as ETag, and the agent's
    peak memory grows by far less than one of them per upload."""
    amp = roomy
    ids = [f"0b5e5b51-0000-4000-8000-00000000000{index}" for index in range(8)]
    config = render(fixtures_dir, "single-http.cfg", amp)
    padding = b"# padding to the upload limit\n"
    bodies = [config.replace(SINGLE_HTTP_LB.encode(), lb.encode()) for lb in ids]
    bodies = [body + padding * ((MAX_UPLOAD - len(body)) // len(padding)) for body in bodies]
    pid = agent_pid(amp)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS from now on
    before = rss_mib(pid)
    answers: dict[int, tuple[int, str | None]] = {}

    def upload(index: int) -> None:
        conn = amp.https(timeout=60)
        try:
            conn.request(
                "PUT", f"/1.0/loadbalancer/{amp.amphora_id}/{ids[index]}/haproxy", body=bodies[index]
            )
            response = conn.getresponse()
            response.read()
            answers[index] = (response.status, response.getheader("etag"))
        finally:
            conn.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    peak = _status_mib(pid, "VmHWM") - before
    assert answers == {index: (202, hashlib.md5(body).hexdigest()) for index, body in enumerate(bodies)}
    assert (amp.base / ids[3] / "haproxy.cfg").read_bytes() == bodies[3]
    assert peak < 40, f"peak grew {peak:.1f} MiB for 8 x 16 MiB"


def _status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")

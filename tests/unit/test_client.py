"""The client's TLS checks, retries and errors, against a small scripted mTLS server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amphora_agent.client import (
    AgentAPIError,
    AgentClient,
    AgentUnreachable,
    ClientError,
    Connection,
    Listener,
    RetryPolicy,
)
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.system import files

AMP_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"
JSON = "application/json"
NO_NIC: dict[str, object] = {"details": "No suitable network interface found"}


@dataclass(frozen=True)
class Answer:
    """One scripted reply."""

    status: int
    body: bytes | dict[str, object] | list[object] = b""
    content_type: str = JSON
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, body, headers))
        script = self.server.script
        answer = script.pop(0) if len(script) > 1 else script[0]
        time.sleep(answer.delay)
        payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.script: list[Answer] = [Answer(200, {"message": "OK"})]
        self.seen: list[Seen] = []

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client that gave up on a slow answer (read timeout) is part of the script."""


@dataclass
class Agent:
    """The scripted server and the files a client needs to reach it."""

    server: _Server
    folder: Path
    sleeps: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        """Answer with these in turn (the last one repeats)."""
        self.server.script = list(answers)

    def client(self, attempts: int = 3, amphora_id: str = AMP_ID, **kwargs: object) -> AgentClient:
        """A client with our CA and client certificate; sleeps are recorded, not slept."""
        settings: dict[str, object] = {
            "url": self.url,
            "amphora_id": amphora_id,
            "ca": self.folder / "ca.pem",
            "client_cert": self.folder / "client.pem",
            "retry": RetryPolicy(attempts, 0.25),
            "read_timeout": 5.0,
            **kwargs,
        }
        return AgentClient(Connection(**settings), sleep=self.sleeps.append)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA, a server certificate named after the amphora id, a client certificate; the server context."""
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority()
    files.atomic_write(folder / "ca.pem", ca.cert_pem, files.PUBLIC)
    files.atomic_write(folder / "server.pem", ca.issue(AMP_ID, server=True).bundle)
    files.atomic_write(folder / "client.pem", ca.issue("controller", server=False).bundle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(folder / "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(folder / "server.pem"))
    return folder, context


@pytest.fixture
def agent(pki: tuple[Path, ssl.SSLContext]) -> Iterator[Agent]:
    """A scripted mTLS server in a thread, shut down after the test."""
    server = _Server(pki[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Agent(server, pki[0])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_upload_sends_raw_body_and_reads_the_reply(agent: Agent) -> None:
    """An upload goes as raw bytes without Content-Type; the status, details and ETag come back."""
    agent.script(Answer(202, {"message": "OK", "details": "stored"}, headers={"ETag": "abc"}))
    with agent.client() as api:
        reply = api.put_haproxy_config("0fea25e0-f190-4bc0-94ec-e5cd2d8994b6", "global\n")
    assert (reply.status, reply.message, reply.details, reply.etag) == (202, "OK", "stored", "abc")
    seen = agent.server.seen[0]
    assert (seen.method, seen.body) == ("PUT", b"global\n")
    assert seen.path == f"/1.0/loadbalancer/{AMP_ID}/0fea25e0-f190-4bc0-94ec-e5cd2d8994b6/haproxy"
    assert "content-type" not in seen.headers
    assert seen.headers["user-agent"] == "amphora-agent-client"


def test_json_bodies_and_typed_results(agent: Agent) -> None:
    """Plug bodies go as JSON; listeners come back typed."""
    agent.script(
        Answer(202, {"message": "OK", "details": "VIPs plugged on interface eth1: 198.51.100.10"}),
        Answer(200, [{"status": "ACTIVE", "uuid": "l1", "type": "HTTP"}]),
    )
    body = {"subnet_cidr": "198.51.100.0/24", "gateway": None, "mac_address": "fa:16:3e:00:00:01"}
    with agent.client() as api:
        assert api.plug_vip("198.51.100.10", body).details == "VIPs plugged on interface eth1: 198.51.100.10"
        assert api.listeners() == [Listener("ACTIVE", "l1", "HTTP")]
    assert agent.server.seen[0].headers["content-type"] == JSON
    assert json.loads(agent.server.seen[0].body) == body


def test_non_json_404_is_retried_until_the_agent_answers(agent: Agent) -> None:
    """A 404 that is not JSON means 'agent not up yet': retried, interval apart, then the real answer."""
    agent.script(
        Answer(404, b"<html>nope</html>", "text/html"), Answer(404, b"", "text/plain"), Answer(200, {})
    )
    with agent.client(attempts=5) as api:
        assert api.details() == {}
    assert len(agent.server.seen) == 3
    assert agent.sleeps == [0.25, 0.25]


def test_hot_plug_404_is_retried(agent: Agent) -> None:
    """The JSON 404 'No suitable network interface found' is retried (nova hot-plug lag)."""
    agent.script(Answer(404, NO_NIC), Answer(202, {"message": "OK", "details": "Plugged on interface eth2"}))
    with agent.client() as api:
        assert api.plug_network({"mac_address": "fa:16:3e:00:00:02"}).details == "Plugged on interface eth2"
    assert len(agent.server.seen) == 2


def test_retries_are_bounded(agent: Agent) -> None:
    """After ``attempts`` retryable 404s the last one is raised, with its details."""
    agent.script(Answer(404, NO_NIC))
    with agent.client(attempts=4) as api, pytest.raises(AgentAPIError) as caught:
        api.plug_vip("198.51.100.10", {"subnet_cidr": "198.51.100.0/24", "gateway": None, "mac_address": "x"})
    assert len(agent.server.seen) == 4 and len(agent.sleeps) == 3
    assert caught.value.status == 404
    assert caught.value.details == "No suitable network interface found"


def test_json_404_is_final_and_carries_message_and_details(agent: Agent) -> None:
    """Any other JSON 404 is not retried: AgentAPIError with the agent's message and details."""
    agent.script(
        Answer(404, {"message": "Loadbalancer Not Found", "details": "No loadbalancer with UUID: x"})
    )
    with agent.client() as api, pytest.raises(AgentAPIError) as caught:
        api.get_haproxy_config("x")
    assert (caught.value.status, caught.value.message) == (404, "Loadbalancer Not Found")
    assert caught.value.details == "No loadbalancer with UUID: x"
    assert len(agent.server.seen) == 1 and agent.sleeps == []


def test_version_discovery_does_not_retry_404(agent: Agent) -> None:
    """GET / is not retried on a 404, as in the controller (an old agent answers 404 there)."""
    agent.script(Answer(404, b"old agent", "text/plain"))
    with agent.client() as api, pytest.raises(AgentAPIError) as caught:
        api.api_version()
    assert caught.value.status == 404 and caught.value.details == "old agent"
    assert len(agent.server.seen) == 1


@pytest.mark.parametrize(
    ("answer", "message", "details"),
    [
        (
            Answer(400, {"message": "Invalid request", "details": "[ALERT] bad"}),
            "Invalid request",
            "[ALERT] bad",
        ),
        (
            Answer(500, {"error": "500 Internal Server Error: boom", "http_code": 500}),
            "500 Internal Server Error: boom",
            None,
        ),
        (
            Answer(503, {"message": "Topology transition in progress"}),
            "Topology transition in progress",
            None,
        ),
        (Answer(502, b"bad gateway page", "text/html"), "Bad Gateway", "bad gateway page"),
    ],
)
def test_error_answers_raise_with_message_and_details(
    agent: Agent, answer: Answer, message: str, details: str | None
) -> None:
    """Errors in either JSON shape, or not JSON at all, give status, message and details; none is retried."""
    agent.script(answer)
    with agent.client() as api, pytest.raises(AgentAPIError) as caught:
        api.reload("0fea25e0-f190-4bc0-94ec-e5cd2d8994b6")
    assert (caught.value.status, caught.value.message, caught.value.details) == (
        answer.status,
        message,
        details,
    )
    assert len(agent.server.seen) == 1


def test_read_timeout_is_retried(agent: Agent) -> None:
    """A reply slower than the read timeout is retried (so the agent may see a request twice)."""
    agent.script(Answer(200, {"api_version": "1.0"}, delay=1.0), Answer(200, {"api_version": "1.0"}))
    with agent.client(read_timeout=0.3) as api:
        assert api.api_version() == "1.0"
    assert len(agent.server.seen) == 2


def test_connection_refused_is_retried_then_reported() -> None:
    """Nothing listening: every attempt fails, the error says how many, with the cause."""
    sleeps: list[float] = []
    conn = Connection(url=f"https://127.0.0.1:{free_port()}", retry=RetryPolicy(3, 0.5))
    with AgentClient(conn, sleep=sleeps.append) as api, pytest.raises(AgentUnreachable) as caught:
        api.info()
    assert caught.value.attempts == 3 and sleeps == [0.5, 0.5]
    assert "ConnectError" in caught.value.cause


def test_server_name_must_be_the_amphora_id(agent: Agent) -> None:
    """A certificate for another amphora fails the TLS check; no request reaches the server."""
    with (
        agent.client(attempts=2, amphora_id="another-amphora") as api,
        pytest.raises(AgentUnreachable) as caught,
    ):
        api.info()
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.cause
    assert agent.server.seen == []


def test_client_certificate_is_required(agent: Agent) -> None:
    """Without our client certificate the agent refuses the connection."""
    with agent.client(attempts=1, client_cert=None) as api, pytest.raises(AgentUnreachable):
        api.info()
    assert agent.server.seen == []


def test_unreadable_tls_files_are_a_client_error(tmp_path: Path) -> None:
    """A missing CA or client certificate fails at once, before any connection."""
    with pytest.raises(ClientError, match="cannot load the TLS files"):
        AgentClient(Connection(url="https://127.0.0.1:1", ca=tmp_path / "none.pem"))


def test_retry_policy_is_validated() -> None:
    """Zero attempts or a negative interval are refused; the controller's policy is 120 x 5 s."""
    with pytest.raises(ValueError):
        RetryPolicy(0, 1.0)
    with pytest.raises(ValueError):
        RetryPolicy(1, -1.0)
    assert RetryPolicy.controller() == RetryPolicy(120, 5.0)

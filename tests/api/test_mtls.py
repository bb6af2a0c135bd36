"""The real server: mutual TLS in front of every route, certificate rotation and config upload live."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.system import files
from lab import namespaces
from tests.api.conftest import substitute
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def amp() -> Iterator[namespaces.Amphora]:
    """One agent in its own amphora namespace for this module; everything it started goes after."""
    with tempfile.TemporaryDirectory(prefix="amp") as path:
        amphora = namespaces.Amphora(Path(path)).create()
        try:
            amphora.start_agent()
            yield amphora
        finally:
            amphora.destroy()


@dataclass(frozen=True)
class Exchange:
    """One TLS connection: the version spoken, the server's certificate and the raw HTTP answer."""

    version: str | None
    peer_der: bytes
    answer: bytes

    @property
    def status(self) -> int:
        """The HTTP status code of the answer."""
        return int(self.answer.split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        """The HTTP body (the server closes the connection, so everything after the headers)."""
        return self.answer.split(b"\r\n\r\n", 1)[1]


def client_context(amp: namespaces.Amphora, pem: Path | None = None) -> ssl.SSLContext:
    """Trust the agent CA, check the name is the amphora id; present ``pem`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(amp.certs / "client_ca.pem"))
    if pem is not None:
        ctx.load_cert_chain(str(pem))
    return ctx


def exchange(amp: namespaces.Amphora, ctx: ssl.SSLContext, request: bytes = b"GET / HTTP/1.1") -> Exchange:
    """A fresh connection and handshake, one request with ``Connection: close``, the whole answer."""
    head = request + b"\r\nHost: amphora\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    deadline = time.monotonic() + 10
    with (
        socket.create_connection((amp.mgmt_ip, 9443), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=amp.amphora_id) as conn,
    ):
        peer = conn.getpeercert(binary_form=True) or b""
        conn.sendall(head)
        chunks = []
        while time.monotonic() < deadline and (chunk := conn.recv(65536)):
            chunks.append(chunk)
        return Exchange(conn.version(), peer, b"".join(chunks))


def issue_client(
    amp: namespaces.Amphora, name: str, ca: CertificateAuthority | None = None, **dates: dt.datetime
) -> Path:
    """A client certificate+key file signed by ``ca`` (default: the agent's CA)."""
    issued = (ca or amp.ca).issue("controller", server=False, **dates)
    path = amp.workdir / f"{name}.pem"
    files.atomic_write(path, issued.bundle)
    return path


def snapshot(amp: namespaces.Amphora) -> dict[str, bytes]:
    """Every file and folder of the amphora's tree except the agent log: what a request could change."""
    return {
        str(path): path.read_bytes() if path.is_file() else b"/"
        for path in sorted(amp.workdir.rglob("*"))
        if path != amp.log_file and not path.is_socket()
    }


def assert_refused(amp: namespaces.Amphora, ctx: ssl.SSLContext) -> None:
    """The TLS layer refuses: an ssl or connection error, or a close before any HTTP byte."""
    try:
        result = exchange(amp, ctx)
    except (ssl.SSLError, ConnectionError) as exc:
        assert not isinstance(exc, ssl.SSLCertVerificationError), exc  # the server is not the problem
        return
    assert not result.answer.startswith(b"HTTP/"), result.answer[:80]
    assert result.answer == b""


@pytest.mark.parametrize("case", ["no-certificate", "other-ca", "expired", "not-yet-valid"])
def test_bad_client_certificates_are_refused(amp: namespaces.Amphora, case: str) -> None:
    """No certificate, another CA's, an expired or a not-yet-valid one: refused at the TLS layer."""
    pem: Path | None = None
    if case == "other-ca":
        pem = issue_client(amp, case, CertificateAuthority("another CA"))
    elif case == "expired":
        pem = issue_client(amp, case, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    elif case == "not-yet-valid":
        pem = issue_client(amp, case, not_before=NOW + DAY, not_after=NOW + 10 * DAY)
    assert_refused(amp, client_context(amp, pem))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"])
def test_old_tls_versions_are_refused(amp: namespaces.Amphora, version: ssl.TLSVersion) -> None:
    """A client that speaks only TLS 1.0 or 1.1 (with a valid certificate) is refused in the handshake."""
    ctx = client_context(amp, amp.certs / "client.pem")
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client really offer the old version
    ctx.minimum_version = ctx.maximum_version = version
    with pytest.raises(ssl.SSLError) as caught:
        exchange(amp, ctx)
    reason = str(caught.value)
    assert "NO_PROTOCOLS_AVAILABLE" not in reason  # the hello was sent: the server refused it
    assert any(word in reason for word in ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "EOF")), reason


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls12_and_tls13_clients_work(amp: namespaces.Amphora, version: ssl.TLSVersion, name: str) -> None:
    """A client pinned to TLS 1.2 (the controller) or TLS 1.3 with a valid certificate gets 200."""
    ctx = client_context(amp, amp.certs / "client.pem")
    ctx.minimum_version = ctx.maximum_version = version
    result = exchange(amp, ctx)
    assert result.version == name
    assert result.status == 200
    assert result.body == b'{"api_version":"1.0"}'


def test_double_slash_discovery_on_the_wire(amp: namespaces.Amphora) -> None:
    """The controller's literal request line ``GET //`` gets the compact version body."""
    result = exchange(amp, client_context(amp, amp.certs / "client.pem"), b"GET // HTTP/1.1")
    assert (result.status, result.body) == (200, b'{"api_version":"1.0"}')


def test_unknown_route_on_the_wire_is_json_404(amp: namespaces.Amphora) -> None:
    """Through the real server too, an unknown route is a 404 with Content-Type application/json."""
    result = exchange(amp, client_context(amp, amp.certs / "client.pem"), b"GET /nope HTTP/1.1")
    assert result.status == 404
    assert b"\r\ncontent-type: application/json\r\n" in result.answer.lower()


@pytest.mark.parametrize(
    "request_line",
    [
        b"PUT /1.0/loadbalancer/../certificates/a.pem HTTP/1.1",
        b"PUT /1.0/loadbalancer/-rf/certificates/a.pem HTTP/1.1",
        b"DELETE /1.0/listeners/.. HTTP/1.1",
        b"PUT /1.0/loadbalancer/0fea25e0/../haproxy HTTP/1.1",
    ],
)
def test_raw_dangerous_paths_write_nothing(amp: namespaces.Amphora, request_line: bytes) -> None:
    """Unnormalised ``..`` and leading-dash segments on the wire are 4xx and change nothing on disk."""
    before = snapshot(amp)
    result = exchange(amp, client_context(amp, amp.certs / "client.pem"), request_line)
    assert 400 <= result.status < 500
    assert snapshot(amp) == before


def test_rotated_certificate_is_presented_on_the_next_handshake(amp: namespaces.Amphora) -> None:
    """PUT /1.0/certificate: 202, the next handshake presents the new certificate, no restart, no drop."""
    ctx = client_context(amp, amp.certs / "client.pem")
    old = exchange(amp, ctx).peer_der
    new = amp.ca.issue(amp.amphora_id, server=True)
    with amp.client() as api:
        response = api.put("/1.0/certificate", content=new.bundle)
        assert (response.status_code, response.json()) == (202, {"message": "OK"})
        assert api.get("/").status_code == 200  # the kept-alive connection goes on
    presented = exchange(amp, ctx)
    assert presented.peer_der == ssl.PEM_cert_to_DER_cert(new.cert_pem.decode())
    assert presented.peer_der != old
    assert presented.status == 200
    assert amp.process is not None and amp.process.poll() is None


def test_bad_certificate_keeps_the_old_one_serving(amp: namespaces.Amphora) -> None:
    """A PEM whose key does not match answers 400; the file and the presented certificate stay."""
    ctx = client_context(amp, amp.certs / "client.pem")
    before = exchange(amp, ctx).peer_der
    on_disk = (amp.certs / "server.pem").read_bytes()
    one, two = amp.ca.issue(amp.amphora_id, server=True), amp.ca.issue(amp.amphora_id, server=True)
    with amp.client() as api:
        response = api.put("/1.0/certificate", content=one.cert_pem + two.key_pem)
    assert response.status_code == 400
    assert response.json()["message"] == "Certificate and key do not match"
    assert (amp.certs / "server.pem").read_bytes() == on_disk
    after = exchange(amp, ctx)
    assert after.peer_der == before
    assert after.status == 200


def test_put_config(amp: namespaces.Amphora) -> None:
    """The controller's updated agent file answers 202 and is written; an unparsable one is 400, unchanged."""
    text = (FIXTURES / "agent" / "amphora-agent-updated.conf").read_text()
    body = substitute(
        text, amp.base, amp.base / "certs", amp.certs / "server.pem", amp.certs / "client_ca.pem"
    ).encode()
    with amp.client() as api:
        response = api.put("/1.0/config", content=body)
        assert (response.status_code, response.json()) == (202, {"message": "OK"})
        assert amp.config_file.read_bytes() == body
        bad = api.put("/1.0/config", content=b"[health_manager\nheartbeat_key = x\n")
        assert bad.status_code == 400
        assert bad.json()["message"] == "Invalid configuration file"
        assert amp.config_file.read_bytes() == body
        assert api.get("/1.0/info").status_code == 200


def test_details_report_eth_links_of_the_haproxy_namespace(amp: namespaces.Amphora) -> None:
    """Once a NIC sits in the haproxy namespace, /1.0/details reports its byte counters as ints."""
    amp.wire_tenant(vips=["198.51.100.10/24"], member_addresses=["198.51.100.1/24"])
    with amp.client() as api:
        response = api.get("/1.0/details")
    assert response.status_code == 200
    networks = response.json()["networks"]
    assert list(networks) == ["eth1"]
    assert set(networks["eth1"]) == {"network_tx", "network_rx", "network_tx_rate", "network_rx_rate"}
    assert isinstance(networks["eth1"]["network_tx"], int)
    assert isinstance(networks["eth1"]["network_rx"], int)

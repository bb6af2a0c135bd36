"""PEM checks for tenant uploads and the agent's own certificate, and the server TLS context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from amphora_agent import tls
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.errors import InvalidInput
from tests.conftest import FIXTURES

MULTI_CERTS = FIXTURES / "certs" / "1255f924-18da-44a0-aad7-23512f2c0594"
EXTRA = FIXTURES / "certs-extra"
UPLOAD = EXTRA / "tenant-upload"
WWW_PEM = MULTI_CERTS / "43283cf1db2d85bdd8deb823fdad81bcfb28cc30.pem"

GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
GARBAGE_KEY = b"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
GARBAGE_CRL = b"-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n"


def read(path: Path) -> bytes:
    """The bytes of a fixture file."""
    return path.read_bytes()


def encrypted_key(traditional: bool = False) -> bytes:
    """A password-protected key (PKCS#8 or OpenSSL's Proc-Type form): haproxy cannot load it unattended."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    form = (
        serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, form, serialization.BestAvailableEncryption(b"secret"))
    )


@pytest.mark.parametrize("path", sorted(MULTI_CERTS.iterdir()), ids=lambda p: p.name[:12])
def test_every_uploaded_fixture_pem_is_accepted(path: Path) -> None:
    """Listener certs (cert, key, intermediate), the crt-list, the CA bundles and the CRL all pass."""
    tls.check_tenant_pem(path.read_bytes())


@pytest.mark.parametrize(
    "path",
    [*sorted(EXTRA.glob("*.pem")), *sorted(UPLOAD.glob("*.crt")), UPLOAD / "intermediate-ca.pem"],
    ids=lambda p: p.name,
)
def test_other_fixture_material_is_accepted(path: Path) -> None:
    """CA certificates and cert+PKCS#8 key bundles from the fixtures pass as tenant PEMs."""
    tls.check_tenant_pem(path.read_bytes())


def _tenant_cases() -> list[tuple[str, bytes]]:
    www_crt, www_key = read(UPLOAD / "www.example.com.crt"), read(UPLOAD / "www.example.com.key")
    inter = read(UPLOAD / "intermediate-ca.pem")
    return [
        ("cert-key-chain", www_crt + www_key + inter),
        ("key-first", www_key + www_crt + inter),
        ("cert-chain-key", www_crt + inter + www_key),
        ("crlf", read(WWW_PEM).replace(b"\n", b"\r\n")),
        ("ca-bundle", read(EXTRA / "root-ca.pem") + inter),
        ("crt-list", b"/var/lib/octavia/certs/lb/a.pem\n/var/lib/octavia/certs/lb/b.pem [alpn h2]\n"),
        ("ec-devcert", CertificateAuthority().issue("tenant", server=True).bundle),
    ]


@pytest.mark.parametrize(("name", "body"), _tenant_cases(), ids=[n for n, _ in _tenant_cases()])
def test_tenant_pem_accepted(name: str, body: bytes) -> None:
    """A key matching the first certificate, in any block order, and PEM-free crt-lists are accepted."""
    tls.check_tenant_pem(body)


def _tenant_rejections() -> list[tuple[str, bytes, str]]:
    www_crt, www_key = read(UPLOAD / "www.example.com.crt"), read(UPLOAD / "www.example.com.key")
    api_key = read(UPLOAD / "api.example.com.key")
    inter = read(UPLOAD / "intermediate-ca.pem")
    return [
        ("other-key", www_crt + api_key + inter, tls.MISMATCH),
        ("chain-first", inter + www_crt + www_key, tls.MISMATCH),
        ("two-keys", www_crt + www_key + api_key, tls.MISMATCH),
        ("garbage-cert", GARBAGE_CERT, tls.NO_CERT),
        ("garbage-cert-with-key", GARBAGE_CERT + www_key, tls.NO_CERT),
        ("garbage-chain", www_crt + www_key + GARBAGE_CERT, tls.NO_CERT),
        ("garbage-key", www_crt + GARBAGE_KEY, tls.NO_KEY),
        ("encrypted-key", www_crt + encrypted_key(), tls.NO_KEY),
        ("encrypted-proc-type-key", www_crt + encrypted_key(traditional=True), tls.NO_KEY),
        ("key-only", www_key, tls.NO_CERT),
        ("unterminated", www_crt[:-30], tls.NO_CERT),
        ("nul", www_crt + b"\0", tls.NO_CERT),
        ("binary", b"\xff\xfe\x00binary", tls.NO_CERT),
        ("not-utf8", b"\xff\xfe not a crt-list", tls.NO_CERT),
        ("garbage-crl", GARBAGE_CRL, "Invalid CRL"),
    ]


@pytest.mark.parametrize(
    ("name", "body", "message"), _tenant_rejections(), ids=[n for n, _, _ in _tenant_rejections()]
)
def test_tenant_pem_rejected(name: str, body: bytes, message: str) -> None:
    """Blocks that cannot work in haproxy are refused with the spec's messages."""
    with pytest.raises(InvalidInput) as caught:
        tls.check_tenant_pem(body)
    assert caught.value.message == message


def test_split_pem_sorts_blocks_by_kind() -> None:
    """The controller's layout (cert, blank line, RSA key, intermediate) splits into two certs and a key."""
    bundle = tls.split_pem(read(WWW_PEM))
    assert (len(bundle.certificates), len(bundle.keys), bundle.crls, bundle.other) == (2, 1, [], [])
    assert bundle.keys[0].startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def _server_cases() -> list[tuple[str, bytes, str | None]]:
    ca = CertificateAuthority()
    good, other = ca.issue("amp", server=True), ca.issue("amp", server=True)
    return [
        ("cert-key", good.bundle, None),
        ("key-cert", good.key_pem + good.cert_pem, None),
        ("rsa-pkcs8-fixture", read(EXTRA / "client-1.pem"), None),
        ("cert-only", good.cert_pem, tls.NO_KEY),
        ("key-only", good.key_pem, tls.NO_CERT),
        ("mismatch", good.cert_pem + other.key_pem, tls.MISMATCH),
        ("empty", b"", tls.NO_CERT),
        ("garbage-cert", GARBAGE_CERT + good.key_pem, tls.NO_CERT),
        ("garbage-key", good.cert_pem + GARBAGE_KEY, tls.NO_KEY),
        ("ca-bundle", read(EXTRA / "root-ca.pem"), tls.NO_KEY),
        ("crt-list", b"/var/lib/octavia/certs/lb/a.pem\n", tls.NO_CERT),
    ]


@pytest.mark.parametrize(("name", "body", "message"), _server_cases(), ids=[n for n, _, _ in _server_cases()])
def test_check_server_pem(name: str, body: bytes, message: str | None) -> None:
    """The agent's own PEM needs a certificate and its matching key; anything less is refused."""
    if message is None:
        tls.check_server_pem(body)
        return
    with pytest.raises(InvalidInput) as caught:
        tls.check_server_pem(body)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("floor", "minimum"),
    [
        ("SSLv3", ssl.TLSVersion.TLSv1_2),
        ("TLSv1", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.1", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
    ],
)
def test_server_context_floor(tmp_path: Path, floor: str, minimum: ssl.TLSVersion) -> None:
    """agent_tls_protocol is a floor never below TLS 1.2, and a client certificate is required."""
    ca = CertificateAuthority()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "server.pem").write_bytes(ca.issue("amp", server=True).bundle)
    ctx = tls.server_context(tmp_path / "server.pem", tmp_path / "ca.pem", floor)
    assert ctx.minimum_version == minimum
    assert ctx.verify_mode == ssl.CERT_REQUIRED

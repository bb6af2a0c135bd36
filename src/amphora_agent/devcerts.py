"""Throwaway certificates for a first run, the demo and the tests: a CA, a server cert, a client cert.

Never used by default: the agent only reads the files its config names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amphora_agent.system import files

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, both as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def bundle(self) -> bytes:
        """Certificate followed by key: the layout of the agent's ``server.pem`` and client files."""
        return self.cert_pem + self.key_pem


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "amphora-agent dev CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        self._key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ONE_DAY)
            .not_valid_after(now + 3650 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self._hashes = hashes

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate."""
        from cryptography.hazmat.primitives import serialization

        return bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        server: bool,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        """A leaf certificate with CN and SAN DNS name ``common_name``."""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _key()
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - ONE_DAY)
            .not_valid_after(not_after or now + 825 * ONE_DAY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self._key, self._hashes.SHA256())
        )
        from cryptography.hazmat.primitives import serialization

        return Issued(bytes(cert.public_bytes(serialization.Encoding.PEM)), _key_pem(key))


@dataclass(frozen=True)
class DevCertPaths:
    """Where ``write_dev_certs`` put each file."""

    ca: Path
    server: Path
    client: Path


def write_dev_certs(folder: Path, amphora_id: str) -> DevCertPaths:
    """Write ``ca.pem``, ``server.pem`` (CN/SAN = amphora id) and ``client.pem`` into ``folder``."""
    ca = CertificateAuthority()
    paths = DevCertPaths(folder / "ca.pem", folder / "server.pem", folder / "client.pem")
    files.atomic_write(paths.ca, ca.cert_pem, files.PUBLIC)
    files.atomic_write(paths.server, ca.issue(amphora_id, server=True).bundle, files.PRIVATE)
    files.atomic_write(paths.client, ca.issue("controller", server=False).bundle, files.PRIVATE)
    return paths

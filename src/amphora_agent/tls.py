"""Mutual TLS for the API, and PEM checks done by OpenSSL itself through the ssl module."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.errors import InvalidInput

LOG = logging.getLogger(__name__)

_VERSIONS = {
    "SSLv3": ssl.TLSVersion.TLSv1_2,
    "TLSv1": ssl.TLSVersion.TLSv1_2,
    "TLSv1.1": ssl.TLSVersion.TLSv1_2,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_KEY_KINDS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"}
NO_CERT = "No certificate found"
NO_KEY = "No RSA key found"
MISMATCH = "Certificate and key do not match"
_NO_PASSWORD = b"\0never"


def server_context(cert: Path, ca: Path, tls_floor: str = "TLSv1.2") -> ssl.SSLContext:
    """A server context that requires a client certificate signed by ``ca``; TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS.get(tls_floor, ssl.TLSVersion.TLSv1_2)
    if tls_floor == "TLSv1.3":
        LOG.warning("agent_tls_protocol TLSv1.3: controllers that pin TLS 1.2 cannot connect")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert))
    return ctx


@dataclass(frozen=True)
class PemBundle:
    """The PEM blocks of an upload, by kind, in order."""

    certificates: list[bytes]
    keys: list[bytes]
    crls: list[bytes]
    other: list[bytes]


def split_pem(data: bytes) -> PemBundle:
    """Split PEM text into its blocks; an unterminated block is an error."""
    bundle = PemBundle([], [], [], [])
    for match in _BLOCK.finditer(data):
        kind, block = match[1], match[0]
        if kind in (b"CERTIFICATE", b"TRUSTED CERTIFICATE"):
            bundle.certificates.append(block)
        elif kind in _KEY_KINDS:
            bundle.keys.append(block)
        elif kind == b"X509 CRL":
            bundle.crls.append(block)
        else:
            bundle.other.append(block)
    begins = data.count(b"-----BEGIN ")
    found = sum(len(x) for x in (bundle.certificates, bundle.keys, bundle.crls, bundle.other))
    if begins != found:
        raise InvalidInput(NO_CERT, "a PEM block is not terminated or is malformed")
    return bundle


@contextlib.contextmanager
def _in_memory_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open that holds ``data`` without it ever touching a disk (memfd)."""
    fd = os.memfd_create("pem-check", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _check_certificates(blocks: list[bytes]) -> None:
    for index, block in enumerate(blocks, 1):
        if not block.startswith(b"-----BEGIN CERTIFICATE-----"):
            continue  # TRUSTED CERTIFICATE: OpenSSL's own form, passed through
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=block.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(NO_CERT, f"certificate {index} does not parse: {exc}") from exc


def _check_pair(bundle: PemBundle, data: bytes) -> None:
    """The private key (if any) must match the first certificate: OpenSSL's own check, no extra library."""
    if len(bundle.keys) > 1:
        raise InvalidInput(MISMATCH, "more than one private key")
    _check_certificates(bundle.certificates)
    if not bundle.keys:
        return
    if b"ENCRYPTED" in bundle.keys[0]:
        raise InvalidInput(NO_KEY, "encrypted private keys are not supported")
    if not bundle.certificates:
        raise InvalidInput(NO_CERT, "a private key without a certificate")
    with _in_memory_file(data) as path:
        try:  # a password that can never be asked for: an encrypted key fails instead of prompting
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path, password=_NO_PASSWORD)
        except ssl.SSLError as exc:
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
                raise InvalidInput(MISMATCH) from exc
            raise InvalidInput(NO_KEY, f"the private key does not parse: {exc}") from exc


def _check_crls(blocks: list[bytes]) -> None:
    for block in blocks:
        with _in_memory_file(block) as path:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
            except ssl.SSLError as exc:
                raise InvalidInput("Invalid CRL", str(exc)) from exc


def check_tenant_pem(data: bytes) -> None:
    """Accept certificate+key bundles, CA bundles, CRLs and crt-lists; reject what cannot work."""
    if b"\0" in data:
        raise InvalidInput(NO_CERT, "the file holds NUL bytes")
    bundle = split_pem(data)
    _check_pair(bundle, data)
    _check_crls(bundle.crls)
    if not (bundle.certificates or bundle.keys or bundle.crls or bundle.other):
        try:  # a crt-list: text lines naming PEM files
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(NO_CERT, "neither PEM nor a text crt-list") from exc


def check_server_pem(data: bytes) -> None:
    """The agent's own certificate: a certificate and its matching private key, both required."""
    bundle = split_pem(data)
    if not bundle.certificates:
        raise InvalidInput(NO_CERT)
    if not bundle.keys:
        raise InvalidInput(NO_KEY)
    _check_pair(bundle, data)

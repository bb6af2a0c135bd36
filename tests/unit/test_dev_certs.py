"""``amphora-agent dev-certs DIR``: certificates that work together, and the agent's own options intact."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path
from typing import cast

import pytest

from amphora_agent import cli

AMP_ID = "6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce"
Subject = tuple[tuple[tuple[str, str], ...], ...]


def handshake(folder: Path, server_name: str) -> str:
    """A mutual-TLS handshake over a socket pair with the written files; the client's subject CN."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(folder / "ca.pem"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(str(folder / "server.pem"))
    client_ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    client_ctx.load_cert_chain(str(folder / "client.pem"))
    left, right = socket.socketpair()
    seen: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                subject = cast(Subject, (tls.getpeercert() or {}).get("subject", ()))
                seen.extend(value for rdn in subject for key, value in rdn if key == "commonName")
        except OSError:
            pass  # the client refused the server's certificate: its side raises

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_name):
            pass
    finally:
        thread.join(5)
        left.close()
    return seen[0] if seen else ""


def test_dev_certs_writes_a_working_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CA, server (named after the amphora id) and client certificate complete a mutual-TLS handshake."""
    folder = tmp_path / "certs"
    assert cli.main(["dev-certs", str(folder), "--amphora-id", AMP_ID]) == 0
    out = capsys.readouterr().out
    assert f"AMPHORA_ID={AMP_ID}\n" in out and f"AMPHORA_CLIENT_CERT={folder / 'client.pem'}\n" in out
    for name in ("server.pem", "client.pem"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert handshake(folder, AMP_ID) == "controller"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(folder, "another-amphora")


def test_dev_certs_makes_up_an_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --amphora-id a new UUID is used and printed."""
    assert cli.main(["dev-certs", str(tmp_path)]) == 0
    amphora_id = capsys.readouterr().out.split("AMPHORA_ID=", 1)[1].split()[0]
    assert len(amphora_id) == 36 and handshake(tmp_path, amphora_id) == "controller"


def test_config_file_option_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``amphora-agent --config-file X`` still reads X (a missing file exits 2 with its name)."""
    assert cli.main(["--config-file", str(tmp_path / "missing.conf")]) == 2
    assert "missing.conf" in capsys.readouterr().err

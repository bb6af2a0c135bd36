"""Tenant certificates, the agent's own certificate and the agent config, through the real app."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from amphora_agent import api, tls
from amphora_agent.devcerts import CertificateAuthority
from tests.api.conftest import SINGLE_LB, Agent
from tests.conftest import FIXTURES

MULTI_LB = "1255f924-18da-44a0-aad7-23512f2c0594"
MULTI_CERTS = sorted((FIXTURES / "certs" / MULTI_LB).iterdir())
GARBAGE_CERT = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
GARBAGE_KEY = b"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"


def md5(data: bytes) -> str:
    """The bare md5 hex digest."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def cert_url(name: str, lb_id: str = MULTI_LB) -> str:
    """The certificate route of one file."""
    return f"/1.0/loadbalancer/{lb_id}/certificates/{name}"


@pytest.mark.parametrize("pem", MULTI_CERTS, ids=lambda p: p.name[:12])
def test_controller_certificate_flow(agent: Agent, pem: Path) -> None:
    """GET md5 is a JSON 404 first; PUT stores the bytes 0600 (200, md5 ETag); GET then gives that md5."""
    url = cert_url(pem.name)
    missing = agent.client.get(url)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {
        "message": "Certificate Not Found",
        "details": f"No certificate with filename: {pem.name}",
    }
    body = pem.read_bytes()
    put = agent.client.put(url, content=body)
    assert put.status_code == 200, put.text
    assert put.json() == {"message": "OK"}
    assert put.headers["etag"] == md5(body)
    stored = agent.layout.cert_dir(MULTI_LB) / pem.name
    assert stored.read_bytes() == body
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    got = agent.client.get(url)
    assert got.status_code == 200
    assert got.json() == {"md5sum": md5(body)}
    assert got.headers["etag"] == md5(body)


def test_delete_certificate(agent: Agent) -> None:
    """DELETE removes the file and answers 200; deleting again (nothing there) is 200 too."""
    pem = MULTI_CERTS[0]
    agent.client.put(cert_url(pem.name), content=pem.read_bytes()).raise_for_status()
    for _ in range(2):
        response = agent.client.delete(cert_url(pem.name))
        assert response.status_code == 200
        assert response.json() == {"message": "OK"}
    assert not (agent.layout.cert_dir(MULTI_LB) / pem.name).exists()
    assert agent.client.get(cert_url(pem.name)).status_code == 404


@pytest.mark.parametrize("length", [200, 235, 236, 250, 251, 252, 253, 254, 255])
def test_long_names_up_to_the_file_system_limit_work(agent: Agent, length: int) -> None:
    """Every name the name check accepts (up to 255 bytes) is stored, read and deleted: never a 500."""
    name = "n" * (length - 4) + ".pem"
    url = cert_url(name)
    body = (FIXTURES / "certs" / MULTI_LB / MULTI_CERTS[0].name).read_bytes()
    assert agent.client.put(url, content=body).status_code == 200
    assert agent.client.get(url).json() == {"md5sum": md5(body)}
    assert agent.client.delete(url).status_code == 200
    assert agent.client.get(url).status_code == 404


def test_a_name_over_the_file_system_limit_is_400(agent: Agent) -> None:
    """256 bytes: refused by the name check, nothing written."""
    before = agent.tree()
    assert agent.client.put(cert_url("n" * 252 + ".pem"), content=b"x").status_code == 400
    assert agent.tree() == before


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
@pytest.mark.parametrize("name", ["x.txt", "apem", "a.PEM", ".pem", "..pem", "a.pem.txt"])
def test_bad_filename_is_400(agent: Agent, method: str, name: str) -> None:
    """A name that is not ``[\\w.-]+\\.pem`` is 400 'Filename has wrong format' for every method."""
    before = agent.tree()
    content = MULTI_CERTS[0].read_bytes() if method == "PUT" else None
    response = agent.client.request(method, cert_url(name), content=content)
    assert response.status_code == 400
    assert response.json() == {"message": "Filename has wrong format"}
    assert agent.tree() == before


def _bad_pems() -> list[tuple[str, bytes, str]]:
    upload = FIXTURES / "certs-extra" / "tenant-upload"
    www_crt, api_key = (
        (upload / "www.example.com.crt").read_bytes(),
        (upload / "api.example.com.key").read_bytes(),
    )
    return [
        ("mismatch", www_crt + api_key, tls.MISMATCH),
        ("garbage-cert", GARBAGE_CERT, tls.NO_CERT),
        ("garbage-key", www_crt + GARBAGE_KEY, tls.NO_KEY),
    ]


@pytest.mark.parametrize(("case", "body", "message"), _bad_pems(), ids=[c for c, _, _ in _bad_pems()])
def test_bad_pem_is_400_and_keeps_the_old_file(agent: Agent, case: str, body: bytes, message: str) -> None:
    """A PEM that cannot work answers the spec's 400 and leaves a stored file with that name as it was."""
    good = MULTI_CERTS[0].read_bytes()
    agent.client.put(cert_url("a.pem"), content=good).raise_for_status()
    before = agent.tree()
    response = agent.client.put(cert_url("a.pem"), content=body)
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert agent.tree() == before


def test_certificate_over_the_limit_is_413(agent: Agent) -> None:
    """A PEM over the size limit is 413 and no file appears."""
    before = agent.tree()
    response = agent.client.put(cert_url("big.pem", SINGLE_LB), content=b"a" * (api.MAX_UPLOAD + 1))
    assert response.status_code == 413
    assert agent.tree() == before


def test_rotate_server_certificate(agent: Agent) -> None:
    """PUT /1.0/certificate with a matching cert+key answers 202 and replaces the file (0600)."""
    new = agent.ca.issue("a46841f0-96d9-4a6c-bfb7-d874eeaabe30", server=True).bundle
    response = agent.client.put("/1.0/certificate", content=new)
    assert response.status_code == 202
    assert response.json() == {"message": "OK"}
    path = agent.settings.agent_server_cert
    assert path.read_bytes() == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _bad_server_pems() -> list[tuple[str, bytes, str]]:
    ca = CertificateAuthority()
    one, two = ca.issue("amp", server=True), ca.issue("amp", server=True)
    return [
        ("cert-only", one.cert_pem, tls.NO_KEY),
        ("key-only", one.key_pem, tls.NO_CERT),
        ("mismatch", one.cert_pem + two.key_pem, tls.MISMATCH),
        ("garbage", GARBAGE_CERT + one.key_pem, tls.NO_CERT),
        ("empty", b"", tls.NO_CERT),
    ]


@pytest.mark.parametrize(
    ("case", "body", "message"), _bad_server_pems(), ids=[c for c, _, _ in _bad_server_pems()]
)
def test_bad_server_certificate_is_400(agent: Agent, case: str, body: bytes, message: str) -> None:
    """A server PEM without a certificate and its matching key is 400, and the old file stays."""
    before = agent.tree()
    response = agent.client.put("/1.0/certificate", content=body)
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert agent.tree() == before


def test_server_certificate_over_the_limit_is_413(agent: Agent) -> None:
    """A server PEM over the size limit is 413 and the old file stays."""
    before = agent.tree()
    assert agent.client.put("/1.0/certificate", content=b"a" * (api.MAX_UPLOAD + 1)).status_code == 413
    assert agent.tree() == before


def updated_config(agent: Agent) -> bytes:
    """The controller's PUT /1.0/config body with this agent's paths."""
    return agent.render((FIXTURES / "agent" / "amphora-agent-updated.conf").read_text()).encode()


def test_put_config_applies_mutable_options(agent: Agent) -> None:
    """The controller's updated file answers 202, replaces the file and takes the new list and key live."""
    config_file = agent.settings.config_file
    assert config_file is not None
    namespace = agent.settings.network_namespace
    body = updated_config(agent)
    response = agent.client.put("/1.0/config", content=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"message": "OK"}
    assert config_file.read_bytes() == body
    assert agent.settings.controller_ip_port_list == ("203.0.113.132:5555", "[2001:db8:ff::5]:5555")
    assert agent.settings.heartbeat_key == "fixture-heartbeat-key-rotated"
    assert agent.settings.network_namespace == namespace  # immutable: changes after a restart only


@pytest.mark.parametrize(
    "body",
    [
        b"this is not an ini file\n",
        b"[health_manager]\nheartbeat_interval = soon\n",
        b"[controller_worker]\nloadbalancer_topology = ACTIVE_ACTIVE\n",
        b"[DEFAULT]\ndebug = \xff\n",
        b"",
        b" \n\n",
    ],
    ids=["not-ini", "bad-int", "bad-choice", "not-utf8", "empty", "blank"],
)
def test_put_bad_config_is_400_and_changes_nothing(agent: Agent, body: bytes) -> None:
    """A file that does not parse answers 400; the file on disk and the live settings stay as they were."""
    before, settings = agent.tree(), agent.settings
    response = agent.client.put("/1.0/config", content=body)
    assert response.status_code == 400
    assert response.json()["message"] == "Invalid configuration file"
    assert agent.tree() == before
    assert agent.settings == settings


def test_put_config_over_the_limit_is_413(agent: Agent) -> None:
    """An agent config over the size limit is 413 and changes nothing."""
    before = agent.tree()
    body = b"[DEFAULT]\n" + b"#" * api.MAX_UPLOAD
    assert agent.client.put("/1.0/config", content=body).status_code == 413
    assert agent.tree() == before

"""PUT and GET of haproxy.cfg: checked by the real ``haproxy -c``, stored atomically, rejected cleanly."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator

import pytest

from amphora_agent import api
from tests.api.conftest import AMP_ID, SINGLE_LB, SINGLE_LISTENER, Agent
from tests.conftest import FIXTURES

MULTI_LB = "1255f924-18da-44a0-aad7-23512f2c0594"
AMP_A = "cad520e3-2e33-4593-892d-18fd042fdd61"
URL = f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB}/haproxy"


def md5(data: bytes) -> str:
    """The bare md5 hex digest the agent uses as ETag."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_put_stores_checked_config(agent: Agent) -> None:
    """A controller config answers 202 with the md5 ETag, is stored 0600 and lists its listener STOPPED."""
    body = agent.fixture_config("single-http.cfg")
    response = agent.client.put(URL, content=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"message": "OK"}
    assert response.headers["etag"] == md5(body)
    stored = agent.layout.haproxy_cfg(SINGLE_LB)
    assert stored.read_bytes() == body
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert not agent.layout.haproxy_cfg_new(SINGLE_LB).exists()
    assert agent.client.get("/1.0/listeners").json() == [
        {"status": "STOPPED", "uuid": SINGLE_LISTENER, "type": "HTTP"}
    ]
    assert agent.services.lbs.master_pid(SINGLE_LB) is None  # an upload never starts anything


def test_put_is_repeatable(agent: Agent) -> None:
    """The controller re-sends after timeouts: the same upload twice answers 202 twice."""
    body = agent.fixture_config("single-http.cfg")
    assert [agent.client.put(URL, content=body).status_code for _ in range(2)] == [202, 202]
    assert agent.layout.haproxy_cfg(SINGLE_LB).read_bytes() == body


def test_get_returns_stored_config(agent: Agent) -> None:
    """GET answers the stored text as text/plain UTF-8 with its md5 as ETag; group lines are gone."""
    body = agent.fixture_config("single-http.cfg")
    with_group = body.replace(b"global\n", b"global\n    group haproxy\n", 1)
    put = agent.client.put(URL, content=with_group)
    assert put.status_code == 202
    assert put.headers["etag"] == md5(with_group)  # the raw body, as the existing agent
    response = agent.client.get(f"/1.0/loadbalancer/{SINGLE_LB}/haproxy")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    assert response.content == body
    assert response.headers["etag"] == md5(body)


def test_invalid_config_is_400_and_keeps_the_old_one(agent: Agent) -> None:
    """haproxy -c refusing an upload: 400 with its output, the file kept aside, the stored one untouched."""
    good = agent.fixture_config("single-http.cfg")
    agent.client.put(URL, content=good).raise_for_status()
    bad = good.replace(b"    mode http\n", b"    mode http\n    bogus-keyword 1\n", 1)
    response = agent.client.put(URL, content=bad)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Invalid request"
    assert "bogus-keyword" in body["details"]
    assert "ALERT" in body["details"]
    assert agent.layout.haproxy_cfg(SINGLE_LB).read_bytes() == good
    assert agent.layout.haproxy_cfg_failed(SINGLE_LB).read_bytes() == bad
    assert not agent.layout.haproxy_cfg_new(SINGLE_LB).exists()
    assert agent.client.get(f"/1.0/loadbalancer/{SINGLE_LB}/haproxy").content == good


def test_invalid_first_config_leaves_no_load_balancer(agent: Agent) -> None:
    """A rejected first upload creates no load balancer: GET is 404 and no listener is listed."""
    response = agent.client.put(URL, content=b"frontend x\n    bind :80\n    nonsense here\n")
    assert response.status_code == 400
    assert agent.layout.haproxy_cfg_failed(SINGLE_LB).exists()
    assert agent.client.get(f"/1.0/loadbalancer/{SINGLE_LB}/haproxy").status_code == 404
    assert agent.client.get("/1.0/listeners").json() == []


@pytest.mark.parametrize(
    ("insert", "line"),
    [(b"\x00", 2), (b"\x1b[31m", 2), (b"\r", 2), (b"\x7f", 2)],
    ids=["nul", "escape", "cr", "del"],
)
def test_control_bytes_are_400_and_write_nothing(agent: Agent, insert: bytes, line: int) -> None:
    """A control byte other than tab and newline is refused with its line number; nothing is written."""
    before = agent.tree()
    body = b"# Configuration\nglobal" + insert + b"\n    maxconn 10\n"
    response = agent.client.put(URL, content=body)
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid request", "details": f"control character on line {line}"}
    assert agent.tree() == before


def test_non_utf8_is_400_and_writes_nothing(agent: Agent) -> None:
    """A body that is not UTF-8 is refused before anything is written."""
    before = agent.tree()
    response = agent.client.put(URL, content=b"global\n    # \xff\xfe\n")
    assert response.status_code == 400
    assert response.json()["message"] == "Invalid request"
    assert agent.tree() == before


def test_utf8_across_any_chunk_boundary_is_fine(agent: Agent) -> None:
    """Multibyte characters anywhere (the old agent failed at 100-byte chunk edges) are accepted."""
    body = agent.fixture_config("single-http.cfg").replace(
        b"global\n", b"global\n" + "    # caf\u00e9 \u2713 \u00e9\u00e9\u00e9\u00e9\n".encode() * 40, 1
    )
    assert agent.client.put(URL, content=body).status_code == 202


def _chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        part = min(65536, size - sent)
        sent += part
        yield b"#" * part


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_config_over_the_limit_is_413_and_writes_nothing(agent: Agent, declared: bool) -> None:
    """A config over the size limit is 413, whether declared up front or streamed; nothing is written."""
    before = agent.tree()
    size = api.MAX_UPLOAD + 1
    content = b"#" * size if declared else _chunks(size)
    response = agent.client.put(URL, content=content)
    assert response.status_code == 413
    assert response.json()["message"] == "Request body too large"
    assert agent.tree() == before


def upload_fixture_certs(agent: Agent, lb_id: str) -> None:
    """The controller's certificate flow for the multi LB: md5 check (404), then upload."""
    for pem in sorted((FIXTURES / "certs" / lb_id).iterdir()):
        url = f"/1.0/loadbalancer/{lb_id}/certificates/{pem.name}"
        assert agent.client.get(url).status_code == 404
        body = agent.render(pem.read_text()).encode()
        assert agent.client.put(url, content=body).status_code == 200


@pytest.mark.parametrize(
    ("name", "amphora_id", "peer"),
    [
        ("multi-listener.cfg", AMP_ID, "ErOJEFT6_YB5mqNf3AQ4Hnke6cM"),
        ("multi-listener-active-standby.cfg", AMP_A, "AzfEGraNuA-wCPQe2bzAAmaZWVc"),
    ],
)
def test_multi_listener_with_certificates(agent: Agent, name: str, amphora_id: str, peer: str) -> None:
    """The four-listener LB passes once its certificates are in; the -L name follows the path's amphora."""
    upload_fixture_certs(agent, MULTI_LB)
    response = agent.client.put(
        f"/1.0/loadbalancer/{amphora_id}/{MULTI_LB}/haproxy", content=agent.fixture_config(name)
    )
    assert response.status_code == 202, response.text
    assert agent.services.lbs.instance(MULTI_LB).peer_name == peer
    assert agent.client.get("/1.0/listeners").json() == [
        {"status": "STOPPED", "uuid": "6ecbef6c-ef23-4cbb-ab12-ca7118390d04", "type": "HTTP"},
        {"status": "STOPPED", "uuid": "a89fb3d1-d706-4431-a506-5696d13e932a", "type": "TCP"},
        {"status": "STOPPED", "uuid": "c776a781-ebd5-44e2-b8e4-5ceee6f15a1a", "type": "TERMINATED_HTTPS"},
        {"status": "STOPPED", "uuid": "d20edd98-8c63-4330-a3b7-015d85b2f868", "type": "TCP"},
    ]


def test_multi_listener_without_certificates_is_400(agent: Agent) -> None:
    """Without its crt-list the TLS listener cannot load: haproxy -c refuses and says why."""
    response = agent.client.put(
        f"/1.0/loadbalancer/{AMP_ID}/{MULTI_LB}/haproxy", content=agent.fixture_config("multi-listener.cfg")
    )
    assert response.status_code == 400
    assert "crt-list" in response.json()["details"]


@pytest.mark.parametrize(("name", "lb_id"), [("ipv6.cfg", "1d3ba11d-afb5-4b1a-baa7-b2698112993d")])
def test_other_fixture_configs_pass(agent: Agent, name: str, lb_id: str) -> None:
    """The IPv6 LB (PING monitor, external-check) passes the real check."""
    response = agent.client.put(
        f"/1.0/loadbalancer/{AMP_ID}/{lb_id}/haproxy", content=agent.fixture_config(name)
    )
    assert response.status_code == 202, response.text


def test_prometheus_listener_listing(agent: Agent) -> None:
    """The internal Prometheus frontend is not reported as a listener."""
    lb_id = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5"
    body = agent.fixture_config("prometheus.cfg")
    assert agent.client.put(f"/1.0/loadbalancer/{AMP_ID}/{lb_id}/haproxy", content=body).status_code == 202
    assert [row["uuid"] for row in agent.client.get("/1.0/listeners").json()] == [
        "12aabb74-f964-4687-b62a-91eeb452d5a7",
        "fe11efda-23d6-4108-9ad3-fbd73c0af2ea",
    ]


def test_config_without_listeners_is_400(agent: Agent) -> None:
    """haproxy -c exits 2 on a config that would not start (no listener): that is a rejection too."""
    response = agent.client.put(URL, content=b"global\n    maxconn 10\n")
    assert response.status_code == 400
    assert "no listener" in response.json()["details"]
    assert not agent.layout.haproxy_cfg(SINGLE_LB).exists()

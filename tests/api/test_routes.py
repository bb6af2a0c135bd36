"""Every route's status codes and JSON bodies, against the real app over real files."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import AMP_ID, SINGLE_LB, UNKNOWN_ID, Agent, TestClient

NOT_FOUND_TEXT = (
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
NOT_ALLOWED_TEXT = "The method is not allowed for the requested URL."
INFO_KEYS = {
    "hostname",
    "uuid",
    "haproxy_version",
    "api_version",
    "keepalived_version",
    "ipvsadm_version",
    "agent_version",
}


@pytest.mark.parametrize("path", ["/", "//"])
def test_version_discovery(agent: Agent, path: str) -> None:
    """GET / and GET // (the controller's request) answer the compact ``{"api_version":"1.0"}``."""
    response = agent.client.get(f"http://testserver{path}")
    assert response.status_code == 200
    assert response.content == b'{"api_version":"1.0"}'
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/info", "/1.0/info"])
def test_info(agent: Agent, path: str) -> None:
    """/info (the spec) and /1.0/info (the controller) give the same keys; haproxy_version starts int.int."""
    response = agent.client.get(path)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == INFO_KEYS
    assert body["api_version"] == "1.0"
    assert body["uuid"] == AMP_ID
    assert re.match(r"\d+\.\d+", body["haproxy_version"]), body["haproxy_version"]
    assert all(isinstance(body[k], str) for k in INFO_KEYS - {"uuid"})


def test_details_keys_and_types(agent: Agent) -> None:
    """/1.0/details has every key of the spec and reference, with the reference's types."""
    response = agent.client.get("/1.0/details")
    assert response.status_code == 200
    body = response.json()
    expected = INFO_KEYS | {
        "networks",
        "active",
        "haproxy_count",
        "cpu_count",
        "cpu",
        "memory",
        "disk",
        "load",
        "active_tuned_profiles",
        "topology",
        "topology_status",
        "listeners",
        "packages",
        "lvs_listener_process_count",
    }
    assert expected <= set(body)
    assert body["networks"] == {}  # the haproxy namespace does not exist yet
    assert body["active"] is True
    assert body["haproxy_count"] == 0
    assert isinstance(body["cpu_count"], int) and body["cpu_count"] >= 1
    assert set(body["cpu"]) == {"total", "user", "system", "soft_irq"}
    assert isinstance(body["cpu"]["total"], int)
    assert all(isinstance(body["cpu"][k], str) for k in ("user", "system", "soft_irq"))
    memory_keys = {"total", "free", "available", "buffers", "cached", "swap_used", "shared", "slab"}
    assert memory_keys <= set(body["memory"])
    assert all(isinstance(v, int) for v in body["memory"].values())
    assert set(body["disk"]) == {"used", "available"}
    assert all(isinstance(v, int) for v in body["disk"].values())
    assert len(body["load"]) == 3 and all(isinstance(v, str) for v in body["load"])
    assert isinstance(body["active_tuned_profiles"], str)
    assert body["topology"] == "SINGLE"
    assert body["topology_status"] == "OK"
    assert body["listeners"] == []
    assert isinstance(body["packages"], dict)
    assert body["lvs_listener_process_count"] == 0


def test_details_lists_stored_listeners(agent: Agent) -> None:
    """Listeners of a stored config appear in /1.0/details, sorted, while nothing runs."""
    body = agent.fixture_config("multi-listener-active-standby.cfg")
    # no certificates are uploaded: store the file directly, as a previous agent run would have
    path = agent.layout.haproxy_cfg("1255f924-18da-44a0-aad7-23512f2c0594")
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    details = agent.client.get("/1.0/details").json()
    assert details["listeners"] == sorted(
        [
            "6ecbef6c-ef23-4cbb-ab12-ca7118390d04",
            "a89fb3d1-d706-4431-a506-5696d13e932a",
            "c776a781-ebd5-44e2-b8e4-5ceee6f15a1a",
            "d20edd98-8c63-4330-a3b7-015d85b2f868",
        ]
    )
    assert details["haproxy_count"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/1.0/info/"),
        ("GET", "/1.0"),
        ("GET", "/2.0/info"),
        ("PUT", "/1.0/loadbalancer"),
        ("POST", "/1.0/plug/network/"),
        ("PUT", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/a/b.pem"),
    ],
)
def test_unknown_route_is_json_404(agent: Agent, method: str, path: str) -> None:
    """A path no route matches is a JSON 404 (the controller retries a non-JSON 404 for minutes)."""
    response = agent.client.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == f"404 Not Found: {NOT_FOUND_TEXT}"
    assert body["http_code"] == 404
    assert body["message"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/"),
        ("PUT", "/1.0/info"),
        ("DELETE", "/1.0/details"),
        ("GET", f"/1.0/loadbalancer/{SINGLE_LB}/start"),
        ("GET", f"/1.0/listeners/{SINGLE_LB}"),
        ("POST", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/a.pem"),
        ("GET", "/1.0/certificate"),
        ("GET", "/1.0/config"),
        ("DELETE", "/1.0/listeners"),
        ("DELETE", f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB}/haproxy"),
    ],
)
def test_wrong_method_is_json_405(agent: Agent, method: str, path: str) -> None:
    """A known path with the wrong method is a JSON 405."""
    response = agent.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == f"405 Method Not Allowed: {NOT_ALLOWED_TEXT}"
    assert body["http_code"] == 405


@pytest.mark.parametrize(
    ("path", "details"),
    [
        ("/1.0/loadbalancer/x/BOGUS", "Unknown action: bogus"),
        (f"/1.0/loadbalancer/{UNKNOWN_ID}/Restart", "Unknown action: restart"),
        (f"/1.0/loadbalancer/{SINGLE_LB}/haproxy", "Unknown action: haproxy"),
    ],
    ids=["bad-id-too", "unknown-lb-too", "haproxy-collision"],
)
def test_unknown_action_is_400_before_existence(agent: Agent, path: str, details: str) -> None:
    """An unknown action is 400 'Invalid Request' (lower-cased) before the id or existence is checked."""
    response = agent.client.put(path)
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid Request", "details": details}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("action", ["start", "stop", "reload", "RELOAD"])
def test_action_on_unknown_lb_is_404(agent: Agent, action: str) -> None:
    """start, stop or reload of a load balancer with no stored config is 404 'Loadbalancer Not Found'."""
    response = agent.client.put(f"/1.0/loadbalancer/{UNKNOWN_ID}/{action}")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Loadbalancer Not Found",
        "details": f"No loadbalancer with UUID: {UNKNOWN_ID}",
    }


def test_get_config_of_unknown_lb_is_404(agent: Agent) -> None:
    """Reading back the config of an unknown load balancer is a JSON 404."""
    response = agent.client.get(f"/1.0/loadbalancer/{UNKNOWN_ID}/haproxy")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Loadbalancer Not Found",
        "details": f"No loadbalancer with UUID: {UNKNOWN_ID}",
    }


def test_listeners_empty(agent: Agent) -> None:
    """With nothing stored, GET /1.0/listeners is an empty JSON array."""
    response = agent.client.get("/1.0/listeners")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


def test_delete_unknown_listener_is_200(agent: Agent) -> None:
    """Deleting an unknown load balancer succeeds, so the controller's repeats are harmless."""
    before = agent.tree()
    response = agent.client.delete(f"/1.0/listeners/{UNKNOWN_ID}")
    assert response.status_code == 200
    assert response.json() == {"message": "OK"}
    assert agent.tree() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"/1.0/loadbalancer/{AMP_ID}/%2E%2E/haproxy"),
        ("PUT", f"/1.0/loadbalancer/%2E%2E/{SINGLE_LB}/haproxy"),
        ("PUT", f"/1.0/loadbalancer/{AMP_ID}/-{SINGLE_LB}/haproxy"),
        ("PUT", f"/1.0/loadbalancer/-{AMP_ID}/{SINGLE_LB}/haproxy"),
        ("PUT", f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB[:8]}%00/haproxy"),
        ("PUT", f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB[:8]}%0A/haproxy"),
        ("PUT", f"/1.0/loadbalancer/{AMP_ID}/%2E%2E%2F%2E%2E/haproxy"),
        ("GET", "/1.0/loadbalancer/%2E%2E/haproxy"),
        ("PUT", "/1.0/loadbalancer/%2E%2E/reload"),
        ("PUT", "/1.0/loadbalancer/-rf/start"),
        ("DELETE", "/1.0/listeners/%2E%2E"),
        ("DELETE", "/1.0/listeners/-rf"),
        ("DELETE", "/1.0/listeners/%2E"),
        ("PUT", "/1.0/loadbalancer/%2E%2E/certificates/a.pem"),
        ("PUT", "/1.0/loadbalancer/-x/certificates/a.pem"),
        ("PUT", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/%2E%2E.pem"),
        ("PUT", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/-a.pem"),
        ("PUT", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/%2E%2E%2Fa.pem"),
        ("GET", "/1.0/loadbalancer/%2E%2E/certificates/a.pem"),
        ("DELETE", "/1.0/loadbalancer/%2E%2E/certificates/a.pem"),
        ("DELETE", f"/1.0/loadbalancer/{SINGLE_LB}/certificates/%2E%2E.pem"),
    ],
)
def test_dangerous_ids_touch_nothing(agent: Agent, method: str, path: str) -> None:
    """Ids with '..', '/', a leading '-', NUL or newline get a 4xx; no file is written or removed."""
    pem = agent.ca.issue("tenant", server=True).bundle
    agent.client.put(f"/1.0/loadbalancer/{SINGLE_LB}/certificates/keep.pem", content=pem).raise_for_status()
    agent.client.put(
        f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB}/haproxy", content=agent.fixture_config("single-http.cfg")
    ).raise_for_status()
    before = agent.tree()
    body = agent.fixture_config("single-http.cfg") if "haproxy" in path else pem
    response = agent.client.request(method, path, content=body if method == "PUT" else None)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    assert agent.tree() == before


def test_unexpected_failure_is_json_500(agent: Agent) -> None:
    """An error no service expected (a folder where the config should be) is a JSON 500, never HTML."""
    agent.layout.haproxy_cfg(SINGLE_LB).mkdir(parents=True)
    client = TestClient(agent.client.app, raise_server_exceptions=False)
    response = client.get(f"/1.0/loadbalancer/{SINGLE_LB}/haproxy")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["http_code"] == 500
    assert response.json()["error"].startswith("500 Internal Server Error: ")

"""start, stop, reload and delete through the app, with a real haproxy in a namespace of the test's own."""

from __future__ import annotations

import http.client

import pytest

from amphora_agent.system import netns
from tests.api.conftest import AMP_ID, Agent

pytestmark = pytest.mark.integration

LB = "5eed0000-0000-4000-8000-00000000000a"
HTTP_LISTENER = "5eed0000-0000-4000-8000-0000000000a1"
TCP_LISTENER = "5eed0000-0000-4000-8000-0000000000a2"


def config(agent: Agent, answer: str) -> bytes:
    """A small controller-shaped config: an HTTP and a TCP listener on loopback, answering ``answer``."""
    base = agent.settings.base_path
    return f"""# Configuration for loadbalancer {LB}
global
    daemon
    maxconn 100
    group haproxy
    stats socket {base}/{LB}.sock mode 0666 level user
    server-state-file {base}/{LB}/servers-state

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend {HTTP_LISTENER}
    bind 127.0.0.1:8080
    mode http
    http-request return status 200 content-type text/plain string {answer}

frontend {TCP_LISTENER}
    bind 127.0.0.1:8081
    mode tcp
    default_backend pool

backend pool
    mode tcp
    server s1 127.0.0.1:9 disabled
""".encode()


def answer(agent: Agent) -> str:
    """What the HTTP listener answers, asked from inside the haproxy namespace."""

    def get() -> str:
        conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=3)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    return netns.call_in(agent.settings.network_namespace, get)


def listeners(agent: Agent) -> list[tuple[str, str, str]]:
    """GET /1.0/listeners as (uuid, type, status) rows."""
    response = agent.client.get("/1.0/listeners")
    assert response.status_code == 200
    return [(row["uuid"], row["type"], row["status"]) for row in response.json()]


def put(agent: Agent, path: str) -> tuple[int, dict[str, str]]:
    """A PUT and its JSON answer."""
    response = agent.client.put(path)
    return response.status_code, response.json()


def test_lifecycle(agent: Agent) -> None:
    """reload starts a stopped LB, start is a no-op, reload applies new config, stop stops, delete cleans."""
    url = f"/1.0/loadbalancer/{AMP_ID}/{LB}/haproxy"
    assert agent.client.put(url, content=config(agent, "one")).status_code == 202
    assert listeners(agent) == [(HTTP_LISTENER, "HTTP", "STOPPED"), (TCP_LISTENER, "TCP", "STOPPED")]
    started = {"message": "OK", "details": f"Configuration file is valid\nhaproxy daemon for {LB} started"}

    assert put(agent, f"/1.0/loadbalancer/{LB}/reload") == (202, started)
    assert listeners(agent) == [(HTTP_LISTENER, "HTTP", "ACTIVE"), (TCP_LISTENER, "TCP", "ACTIVE")]
    assert answer(agent) == "one"
    details = agent.client.get("/1.0/details").json()
    assert details["haproxy_count"] == 1
    assert details["listeners"] == sorted([HTTP_LISTENER, TCP_LISTENER])
    master = agent.services.lbs.master_pid(LB)
    assert master is not None

    assert agent.client.put(url, content=config(agent, "two")).status_code == 202
    assert put(agent, f"/1.0/loadbalancer/{LB}/start") == (202, started)
    assert answer(agent) == "one"  # start of a running LB does not load the new config
    assert put(agent, f"/1.0/loadbalancer/{LB}/reload") == (
        202,
        {"message": "OK", "details": f"Listener {LB} reloaded"},
    )
    assert answer(agent) == "two"
    assert agent.services.lbs.master_pid(LB) == master  # hitless: the same master
    assert agent.layout.servers_state(LB).exists()  # saved before the reload

    assert put(agent, f"/1.0/loadbalancer/{LB}/STOP") == (
        202,
        {"message": "OK", "details": f"Listener {LB} stoped"},
    )
    assert listeners(agent) == [(HTTP_LISTENER, "HTTP", "STOPPED"), (TCP_LISTENER, "TCP", "STOPPED")]
    assert agent.client.get("/1.0/details").json()["haproxy_count"] == 0
    assert put(agent, f"/1.0/loadbalancer/{LB}/start") == (202, started)
    assert answer(agent) == "two"

    response = agent.client.delete(f"/1.0/listeners/{LB}")
    assert (response.status_code, response.json()) == (200, {"message": "OK"})
    assert agent.services.lbs.master_pid(LB) is None
    assert not agent.layout.lb_dir(LB).exists()
    assert not agent.layout.stats_socket(LB).exists()
    assert listeners(agent) == []
    assert put(agent, f"/1.0/loadbalancer/{LB}/reload")[0] == 404


def test_bad_upload_leaves_the_running_config(agent: Agent) -> None:
    """A rejected upload while haproxy runs: 400, and the running process keeps serving the old config."""
    url = f"/1.0/loadbalancer/{AMP_ID}/{LB}/haproxy"
    agent.client.put(url, content=config(agent, "one")).raise_for_status()
    agent.client.put(f"/1.0/loadbalancer/{LB}/reload").raise_for_status()
    bad = config(agent, "two").replace(b"    mode tcp\n", b"    mode tcp\n    no-such-keyword\n", 1)
    assert agent.client.put(url, content=bad).status_code == 400
    assert put(agent, f"/1.0/loadbalancer/{LB}/reload")[0] == 202
    assert answer(agent) == "one"


def test_start_failure_is_json_500(agent: Agent) -> None:
    """A config that passes -c but cannot bind (its VIP is not plugged) answers 500 with haproxy's words."""
    unplugged = config(agent, "one").replace(b"bind 127.0.0.1:8080", b"bind 198.51.100.99:8080")
    agent.client.put(f"/1.0/loadbalancer/{AMP_ID}/{LB}/haproxy", content=unplugged).raise_for_status()
    response = agent.client.put(f"/1.0/loadbalancer/{LB}/start")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["message"] == "Error starting haproxy"
    assert "198.51.100.99:8080" in body["details"]
    assert listeners(agent) == [(HTTP_LISTENER, "HTTP", "STOPPED"), (TCP_LISTENER, "TCP", "STOPPED")]

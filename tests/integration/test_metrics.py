"""A PROMETHEUS listener on a real agent with real haproxy: scraped through its VIP from the client side.

The load balancer is the controller's own ``prometheus.cfg`` (an HTTP listener on :80 with one member
and a PROMETHEUS listener on :9100). Prometheus's path: client -> VIP:9100 (haproxy) -> the agent's
127.0.0.1:9102 in the haproxy namespace -> haproxy's exporter on 127.0.0.1:9101 -> back, renamed.
Names, labels and HELP lines are checked against the existing proxy's table (``tests/metrics_contract``)
applied to what haproxy's exporter itself answers.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.metrics.exposition import Exposition, parse
from amphora_agent.system import netns
from lab import namespaces
from tests.integration.helpers import get, render
from tests.metrics_contract import CPU_HELP, MEMORY_HELP, PROXY_MAP, proxy_rewrite

pytestmark = pytest.mark.integration

LB = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5"
VIP = "198.51.100.30"
HTTP_LISTENER = "12aabb74-f964-4687-b62a-91eeb452d5a7"
PROMETHEUS_LISTENER = "fe11efda-23d6-4108-9ad3-fbd73c0af2ea"
POOL = f"3b1609b2-c599-43aa-9a0e-977ee9ef5f06:{HTTP_LISTENER}"
MEMBER = "3687fe28-01e9-4a9f-9988-8855b753bb25"
EXPORTER_SERVICE = "http-request use-service prometheus-exporter if { path /metrics }"
AMPHORACTL = str(Path(sys.executable).with_name("amphoractl"))
STALLED_BACKEND = """
backend stalled
    mode http
    timeout connect 5s
    timeout server 30s
    server silent 127.0.0.1:9109
"""


def scrape(path: str = "/metrics", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET through the PROMETHEUS listener's VIP port, as Prometheus does: status, headers, body."""
    conn = http.client.HTTPConnection(VIP, 9100, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def metrics(timeout: float = 10.0) -> Exposition:
    """A successful scrape, read."""
    status, _, body = scrape(timeout=timeout)
    assert status == 200, body[:300]
    return parse(body.decode())


def inside(amp: namespaces.Amphora, port: int) -> tuple[int, bytes]:
    """GET 127.0.0.1:<port>/metrics from inside the haproxy namespace."""
    return netns.call_in(amp.haproxy_ns, lambda: get("127.0.0.1", port, "/metrics", timeout=10.0))


def upload(amp: namespaces.Amphora, fixtures_dir: Path, *edits: tuple[str, str], extra: str = "") -> None:
    """The controller's prometheus.cfg (lines replaced, sections added for a fault), uploaded, reloaded."""
    body = render(fixtures_dir, "prometheus.cfg", amp)
    for old, new in edits:
        assert old.encode() in body
        body = body.replace(old.encode(), new.encode())
    body += extra.encode()
    with amp.client() as api:
        api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{LB}/haproxy", content=body).raise_for_status()
        api.put(f"/1.0/loadbalancer/{LB}/reload").raise_for_status()


def wire(amp: namespaces.Amphora) -> None:
    """The VIP on the amphora, the client address and the member's address on our side."""
    amp.wire_tenant(
        vips=[f"{VIP}/24"],
        member_addresses=["198.51.100.1/24", "203.0.113.13/24"],
        haproxy_side=["203.0.113.2/24"],
    )


@pytest.fixture
def prometheus_lb(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> Iterator[namespaces.Amphora]:
    """The prometheus LB serving, its member up, the PROMETHEUS listener answering 200."""
    wire(amphora)
    backends.start("203.0.113.13", 80, "member-13")
    upload(amphora, fixtures_dir)
    assert namespaces.wait_until(lambda: scrape(timeout=2)[0] == 200, 10), "no 200 from the VIP"
    yield amphora


def value(found: Exposition, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly ``labels``."""
    hits = [float(s.value) for s in found.samples if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_a_scrape_through_the_vip_keeps_the_proxys_contract(prometheus_lb: namespaces.Amphora) -> None:
    """Headers, families, label keys and HELP lines: the proxy's table applied to haproxy's own answer."""
    status, headers, body = scrape()
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4"
    assert headers["cache-control"] == "no-cache"
    ours = parse(body.decode())
    direct_status, direct = inside(prometheus_lb, 9101)
    assert direct_status == 200
    expected = parse(proxy_rewrite(direct.decode().splitlines(keepends=True)))

    assert ours.families()[:2] == ["octavia_loadbalancer_cpu", "octavia_loadbalancer_memory"]
    assert (ours.helps["octavia_loadbalancer_cpu"], ours.helps["octavia_loadbalancer_memory"]) == (
        CPU_HELP,
        MEMORY_HELP,
    )
    assert 0 <= value(ours, "octavia_loadbalancer_memory") <= 100
    assert ours.families()[2:] == expected.families()
    assert {k: ours.helps[k] for k in expected.helps} == expected.helps
    assert {k: ours.types[k] for k in expected.types} == expected.types
    keys = [(s.name, tuple(s.labels.items())) for s in ours.samples[2:]]
    assert keys == [(s.name, tuple(s.labels.items())) for s in expected.samples]

    overridden = {octavia: help_text for octavia, help_text in PROXY_MAP.values() if help_text}
    assert {k: v for k, v in ours.helps.items() if k in overridden} == {
        k: overridden[k] for k in ours.helps if k in overridden
    }
    assert "prometheus-exporter" not in body.decode() and "haproxy_" not in body.decode()
    listeners = {s.labels["listener"] for s in ours.samples if s.name == "octavia_listener_status"}
    assert listeners == {HTTP_LISTENER, PROMETHEUS_LISTENER}
    assert value(ours, "octavia_member_status", pool=POOL, member=MEMBER, state="UP") == 1


COUNTERS = (
    ("octavia_listener_sessions_total", {"listener": HTTP_LISTENER}),
    ("octavia_listener_http_requests_total", {"listener": HTTP_LISTENER}),
    ("octavia_listener_http_responses_total", {"listener": HTTP_LISTENER, "code": "2xx"}),
    ("octavia_pool_sessions_total", {"pool": POOL}),
    ("octavia_member_sessions_total", {"pool": POOL, "member": MEMBER}),
    ("octavia_member_http_responses_total", {"pool": POOL, "member": MEMBER, "code": "2xx"}),
)


def test_counters_move_with_traffic_through_the_http_listener(prometheus_lb: namespaces.Amphora) -> None:
    """Seven requests through VIP:80 add seven to the listener's, pool's and member's counters."""
    before = metrics()
    for _ in range(7):
        assert get(VIP, 80)[0] == 200
    after = metrics()
    for name, labels in COUNTERS:
        assert value(after, name, **labels) - value(before, name, **labels) == 7, name
    for name in ("octavia_listener_bytes_in_total", "octavia_listener_bytes_out_total"):
        assert value(after, name, listener=HTTP_LISTENER) > value(before, name, listener=HTTP_LISTENER)
    _, direct = inside(prometheus_lb, 9101)  # no HTTP traffic since: haproxy's own figures agree
    raw = parse(direct.decode())
    assert value(raw, "haproxy_frontend_bytes_in_total", proxy=HTTP_LISTENER) == value(
        after, "octavia_listener_bytes_in_total", listener=HTTP_LISTENER
    )


def test_502_when_haproxys_exporter_fails_or_hangs_never_a_hang(
    prometheus_lb: namespaces.Amphora, fixtures_dir: Path
) -> None:
    """An exporter answering 503, one that never answers, and no haproxy at all: 502, in bounded time."""
    upload(prometheus_lb, fixtures_dir, (EXPORTER_SERVICE, "http-request deny deny_status 503"))
    assert namespaces.wait_until(lambda: scrape(timeout=5)[0] == 502, 10)
    status, headers, body = scrape()
    assert (status, headers["content-type"]) == (502, "text/plain; charset=utf-8")
    assert b"answered HTTP/1.1 503" in body

    # the exporter's frontend closes without an answer (its reject rule), then hands the request to
    # a server that accepts and never answers
    stalled = (EXPORTER_SERVICE, "use_backend stalled if { path /metrics }")
    upload(prometheus_lb, fixtures_dir, stalled, extra=STALLED_BACKEND)
    assert namespaces.wait_until(lambda: b"no HTTP answer (0 bytes)" in scrape()[2], 5)
    silent = netns.call_in(prometheus_lb.haproxy_ns, lambda: socket.create_server(("127.0.0.1", 9109)))
    try:
        upload(prometheus_lb, fixtures_dir, stalled, ("http-request reject", ""), extra=STALLED_BACKEND)
        time.sleep(0.5)  # the reload has taken
        started = time.monotonic()
        status, _, body = scrape(timeout=15)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert status == 502 and b"no answer within 4 s" in body
    assert 3.5 < took < 5.0  # the agent's deadline, inside haproxy's 5 s "timeout server"

    with prometheus_lb.client() as api:
        api.put(f"/1.0/loadbalancer/{LB}/stop").raise_for_status()
    status, body = inside(prometheus_lb, 9102)
    assert status == 502 and b"Connect call failed" in body


def test_the_endpoint_serves_from_start_up_and_follows_a_recreated_namespace(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """Listening before any load balancer exists; after the namespace is deleted and made again, too."""
    assert namespaces.wait_until(lambda: inside(amphora, 9102)[0] == 502, 5)  # up, no exporter yet
    wire(amphora)
    backends.start("203.0.113.13", 80, "member-13")
    upload(amphora, fixtures_dir)
    assert namespaces.wait_until(lambda: scrape(timeout=2)[0] == 200, 10)

    with amphora.client() as api:
        api.put(f"/1.0/loadbalancer/{LB}/stop").raise_for_status()
    link = amphora.tenant.link if amphora.tenant else ""
    namespaces.sh("ip", "netns", "del", amphora.haproxy_ns)
    # the namespace (and the veth in it) is freed once the agent's serving thread has left it
    gone = namespaces.wait_until(lambda: not namespaces.sh("ip", "link", "show", link, check=False), 5)
    assert gone, "the agent still holds the deleted namespace"
    wire(amphora)  # a new namespace of the same name (a new inode)
    with amphora.client() as api:
        api.put(f"/1.0/loadbalancer/{LB}/start").raise_for_status()
    assert namespaces.wait_until(lambda: scrape(timeout=2)[0] == 200, 10), amphora.log_file.read_text()[
        -2000:
    ]
    assert value(metrics(), "octavia_listener_status", listener=HTTP_LISTENER, state="UP") == 1


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    """``amphoractl`` as an operator runs it."""
    return subprocess.run(
        [AMPHORACTL, *args], capture_output=True, text=True, timeout=60, env={"COLUMNS": "250"}, check=False
    )


def test_amphoractl_metrics_reads_the_namespace_or_a_url(prometheus_lb: namespaces.Amphora) -> None:
    """Inside the namespace or through the VIP, filtered by family and id, as text, JSON or a table."""
    hx = prometheus_lb.haproxy_ns
    raw = ctl("metrics", "--netns", hx, "--family", "listener_status", "--raw")
    assert raw.returncode == 0, raw.stderr
    found = parse(raw.stdout)
    assert found.families() == ["octavia_listener_status"]
    assert found.helps["octavia_listener_status"] == "Current status of the listener."
    assert {s.labels["listener"] for s in found.samples} == {HTTP_LISTENER, PROMETHEUS_LISTENER}

    as_json = ctl("metrics", "--from", f"http://{VIP}:9100/metrics", "--id", MEMBER, "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert rows and all(row["labels"]["member"] == MEMBER for row in rows)

    table = ctl("metrics", "--netns", hx, "-f", "octavia_loadbalancer_cpu")
    assert table.returncode == 0 and "octavia_loadbalancer_cpu" in table.stdout

    everything = ctl("metrics", "--netns", hx, "--raw")
    assert everything.stdout.startswith("# HELP octavia_loadbalancer_cpu ")

    with prometheus_lb.client() as api:
        api.put(f"/1.0/loadbalancer/{LB}/stop").raise_for_status()
    failed = ctl("metrics", "--netns", hx)
    assert failed.returncode == 1 and "502" in failed.stderr
    missing = ctl("metrics", "--netns", "no-such-namespace")
    assert missing.returncode == 2 and "no namespace no-such-namespace" in missing.stderr

"""Heartbeats from a real agent in an amphora namespace, received here as the health manager would.

The agent sends to ``[2001:db8:f00:<index>::1]:<port>``, our end of its management veth, every second;
each datagram is checked with the project's decoder (HMAC, bounds, schema, no negative counter).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amphora_agent.health import codec, samples
from amphora_agent.system import haproxy
from lab import namespaces
from tests.integration.helpers import SINGLE_HTTP_LB, render

pytestmark = pytest.mark.integration

KEY = "integration-heartbeat-key"
SINGLE_LISTENER = "922d8f42-59a5-4a50-b10d-9632277e363e"
SINGLE_POOL = f"9f79c892-293e-43fa-a9d2-6d376035437a:{SINGLE_LISTENER}"
MEMBER_11, MEMBER_12 = "ba6be44a-e4d5-485b-8617-9ef6e264e099", "aea58f66-fa32-4d7a-9f9b-7e3108c4f65a"
PROM_LB = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5"
PROM_HTTP_LISTENER, PROM_LISTENER = (
    "12aabb74-f964-4687-b62a-91eeb452d5a7",
    "fe11efda-23d6-4108-9ad3-fbd73c0af2ea",
)
PROM_POOL = f"3b1609b2-c599-43aa-9a0e-977ee9ef5f06:{PROM_HTTP_LISTENER}"
PROM_MEMBER = "3687fe28-01e9-4a9f-9988-8855b753bb25"
GOOD_REQUEST = b"GET / HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"NOT HTTP AT ALL\r\n\r\n"
STATS = ("tx", "rx", "conns", "totconns", "ereq")


@dataclass
class Beats:
    """The health manager's end: decodes every datagram with ``key`` and keeps what it saw."""

    sock: socket.socket
    key: str = KEY
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The UDP port we listen on."""
        return int(self.sock.getsockname()[1])

    def next(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next heartbeat (AssertionError when none comes within ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            datagram = self.sock.recv(70000)
        except TimeoutError:
            raise AssertionError(f"no heartbeat within {timeout} s") from None
        message = dict(codec.decode(datagram, self.key))
        self.seen.append(message)
        return message

    def drain(self) -> list[dict[str, Any]]:
        """Whatever is queued now, decoded."""
        drained = []
        self.sock.setblocking(False)
        try:
            while True:
                drained.append(dict(codec.decode(self.sock.recv(70000), self.key)))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        self.seen.extend(drained)
        return drained

    def until(self, accept: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first heartbeat ``accept`` takes, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                last = self.next(max(0.1, deadline - time.monotonic()))
                if accept(last):
                    return last
        raise AssertionError(f"no matching heartbeat in {timeout} s; last: {last}")

    def totals(self, listener_id: str, connections: int, timeout: float = 8.0) -> dict[str, int]:
        """Sum a listener's deltas over the next beats until ``connections`` are counted, plus one beat."""
        total = dict.fromkeys(STATS, 0)
        deadline = time.monotonic() + timeout

        def add(message: dict[str, Any]) -> None:
            listener = message["listeners"].get(listener_id)
            for name in ("tx", "rx", "totconns", "ereq"):
                total[name] += listener["stats"][name] if listener else 0

        while total["totconns"] < connections and time.monotonic() < deadline:
            add(self.next(max(0.1, deadline - time.monotonic())))
        add(self.next())  # one more beat: nothing may be counted twice
        return total


def exchange(host: str, request: bytes, port: int = 80) -> int:
    """Send one request on a new connection and read until haproxy closes it; bytes received."""
    with socket.create_connection((host, port), timeout=3) as conn:
        conn.sendall(request)
        received = 0
        while data := conn.recv(65536):
            received += len(data)
    return received


def traffic(host: str, good: int, bad: int = 0) -> int:
    """``good`` GETs and ``bad`` malformed requests, each on a new connection; bytes received."""
    return sum(exchange(host, request) for request in [GOOD_REQUEST] * good + [BAD_REQUEST] * bad)


def haproxy_counters(amp: namespaces.Amphora, lb_id: str, listener_id: str) -> dict[str, int]:
    """A listener's absolute counters, read from haproxy's stats socket directly.

    In HTTP mode haproxy counts the bytes of its internal message form, not the wire bytes, so the
    deltas are checked against haproxy's own figures.
    """
    answer = haproxy.stats_query(amp.base / f"{lb_id}.sock", samples.SHOW_STAT_ALL)
    return samples.listeners_from_rows(samples.parse_show_stat(answer))[listener_id].counters()


def counted(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the heartbeats must have reported between two absolute readings."""
    return {
        "tx": after["bout"] - before["bout"],
        "rx": after["bin"] - before["bin"],
        "conns": 0,
        "totconns": after["stot"] - before["stot"],
        "ereq": after["ereq"] - before["ereq"],
    }


@pytest.fixture
def beats() -> Iterator[Beats]:
    """A UDP socket on every address of our namespace (our end of each management veth)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        yield Beats(sock)


def controller_entry(amp: namespaces.Amphora, port: int) -> str:
    """Our end of ``amp``'s management link, as a ``controller_ip_port_list`` entry."""
    return f"[2001:db8:f00:{amp.index:x}::1]:{port}"


@pytest.fixture
def hb_amphora(workdir: Path, beats: Beats) -> Iterator[namespaces.Amphora]:
    """A running agent that sends a heartbeat every second to ``beats``."""
    amp = namespaces.Amphora(workdir)
    amp.extra_config = {
        "health_manager": {
            "controller_ip_port_list": controller_entry(amp, beats.port),
            "heartbeat_interval": "1",
            "heartbeat_key": KEY,
        }
    }
    amp.create()
    try:
        amp.start_agent()
        yield amp
    finally:
        amp.destroy()


def load(amp: namespaces.Amphora, fixtures_dir: Path, name: str, lb_id: str) -> None:
    """Upload a controller config (health checks every 300 ms instead of 5 s) and reload it."""
    body = render(fixtures_dir, name, amp).replace(b"check inter 5s", b"check inter 300ms")
    with amp.client() as api:
        api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy", content=body).raise_for_status()
        api.put(f"/1.0/loadbalancer/{lb_id}/reload").raise_for_status()


def wire(amp: namespaces.Amphora, backends: namespaces.Backends, members: tuple[str, ...]) -> None:
    """VIPs .10 (single-http) and .30 (prometheus) on the amphora; member servers on our side."""
    amp.wire_tenant(
        vips=["198.51.100.10/24", "198.51.100.30/24"],
        member_addresses=["198.51.100.1/24", "203.0.113.11/24", "203.0.113.12/24", "203.0.113.13/24"],
        haproxy_side=["203.0.113.2/24"],
    )
    for address in members:
        backends.start(address, 80, f"member-{address}")


def members_of(message: dict[str, Any], pool: str) -> dict[str, str] | None:
    """The members of ``pool`` in a heartbeat, or None when the pool is absent."""
    entry = message["pools"].get(pool)
    return entry["members"] if entry else None


def test_two_load_balancers_statuses_and_traffic_deltas(
    hb_amphora: namespaces.Amphora, beats: Beats, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """Two LBs: all listeners and pools reported, members up and down followed, traffic counted exactly."""
    amp = hb_amphora
    wire(amp, backends, ("203.0.113.11", "203.0.113.13"))
    load(amp, fixtures_dir, "single-http.cfg", SINGLE_HTTP_LB)
    load(amp, fixtures_dir, "prometheus.cfg", PROM_LB)
    first = beats.until(
        lambda m: (
            members_of(m, SINGLE_POOL) == {MEMBER_11: "UP", MEMBER_12: "DOWN"} and PROM_POOL in m["pools"]
        )
    )
    assert first["id"] == amp.amphora_id and first["ver"] == 3
    assert sorted(first["listeners"]) == sorted([SINGLE_LISTENER, PROM_HTTP_LISTENER, PROM_LISTENER])
    assert all(listener["status"] == "OPEN" for listener in first["listeners"].values())
    assert first["pools"] == {
        SINGLE_POOL: {"status": "UP", "members": {MEMBER_11: "UP", MEMBER_12: "DOWN"}},
        PROM_POOL: {"status": "UP", "members": {PROM_MEMBER: "no check"}},  # no monitor; exporter filtered
    }

    beats.drain()
    start = len(beats.seen)  # every beat from here on was collected after the traffic began
    single_before = haproxy_counters(amp, SINGLE_HTTP_LB, SINGLE_LISTENER)
    prom_before = haproxy_counters(amp, PROM_LB, PROM_HTTP_LISTENER)
    received = traffic("198.51.100.10", good=5, bad=1)
    traffic("198.51.100.30", good=3)
    single = beats.totals(SINGLE_LISTENER, 6)
    assert single == counted(single_before, haproxy_counters(amp, SINGLE_HTTP_LB, SINGLE_LISTENER))
    assert (single["totconns"], single["ereq"]) == (6, 1)
    assert 0 < single["tx"] <= received and single["rx"] > 0
    later = beats.seen[start:]
    prom = {name: sum(m["listeners"][PROM_HTTP_LISTENER]["stats"][name] for m in later) for name in STATS}
    assert prom == counted(prom_before, haproxy_counters(amp, PROM_LB, PROM_HTTP_LISTENER))
    assert prom["totconns"] == 3
    assert all(m["listeners"][PROM_LISTENER]["stats"]["totconns"] == 0 for m in later)

    backends.start("203.0.113.12", 80, "member-12")
    backends.processes[0].kill()  # 203.0.113.11
    backends.processes[0].wait(5)
    beats.until(lambda m: members_of(m, SINGLE_POOL) == {MEMBER_11: "DOWN", MEMBER_12: "UP"})
    seqs = [m["seq"] for m in beats.seen]
    assert seqs == sorted(set(seqs))


def test_deltas_and_seq_survive_an_agent_restart(
    hb_amphora: namespaces.Amphora, beats: Beats, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """Traffic while the agent is down is reported once after its restart; seq keeps growing."""
    amp = hb_amphora
    wire(amp, backends, ("203.0.113.11", "203.0.113.12"))
    load(amp, fixtures_dir, "single-http.cfg", SINGLE_HTTP_LB)
    traffic("198.51.100.10", good=3)
    assert beats.totals(SINGLE_LISTENER, 3)["totconns"] == 3
    amp.stop_agent()
    beats.drain()
    last_seq = max(m["seq"] for m in beats.seen)
    before = haproxy_counters(amp, SINGLE_HTTP_LB, SINGLE_LISTENER)
    traffic("198.51.100.10", good=4)
    amp.start_agent()
    after = beats.totals(SINGLE_LISTENER, 4)
    assert after == counted(before, haproxy_counters(amp, SINGLE_HTTP_LB, SINGLE_LISTENER))
    assert after["totconns"] == 4 and after["tx"] > 0
    assert min(m["seq"] for m in beats.seen if m["seq"] > last_seq) == last_seq + 1


def test_haproxy_restart_and_reload_give_no_negative_delta(
    hb_amphora: namespaces.Amphora, beats: Beats, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """When haproxy's counters fall (stop+start, reload) the new absolute values are reported."""
    amp = hb_amphora
    wire(amp, backends, ("203.0.113.11", "203.0.113.12"))
    load(amp, fixtures_dir, "single-http.cfg", SINGLE_HTTP_LB)
    traffic("198.51.100.10", good=6)
    assert beats.totals(SINGLE_LISTENER, 6)["totconns"] == 6
    with amp.client() as api:
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/stop").raise_for_status()
        beats.until(lambda m: SINGLE_LISTENER not in m["listeners"])
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/start").raise_for_status()
    traffic("198.51.100.10", good=2)
    assert beats.totals(SINGLE_LISTENER, 2)["totconns"] == 2  # decoder: no beat had a negative counter
    with amp.client() as api:
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
    traffic("198.51.100.10", good=1)
    assert beats.totals(SINGLE_LISTENER, 1)["totconns"] == 1
    assert haproxy_counters(amp, SINGLE_HTTP_LB, SINGLE_LISTENER)["stot"] == 1  # it fell from 2 to 1


def test_config_push_changes_target_and_key_on_the_next_beat(
    hb_amphora: namespaces.Amphora, beats: Beats
) -> None:
    """PUT /1.0/config with a new list (one entry malformed) and key: the next beats follow it."""
    amp = hb_amphora
    beats.next()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        moved = Beats(sock, key="rotated-key")
        amp.extra_config["health_manager"].update(
            controller_ip_port_list=f"not-an-entry, {controller_entry(amp, moved.port)}",
            heartbeat_key="rotated-key",
        )
        body = "".join(
            f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
            for section, values in amp.config_sections().items()
        )
        with amp.client() as api:
            assert api.put("/1.0/config", content=body.encode()).status_code == 202
        changed_at = time.monotonic()
        message = moved.next(timeout=3)
        assert time.monotonic() - changed_at < 2.5
        assert message["id"] == amp.amphora_id
    time.sleep(0.2)
    stale = [m for m in beats.drain() if m["seq"] > message["seq"]]
    assert stale == []  # nothing more went to the old target
    assert "skipping 'not-an-entry' is not ip:port" in amp.log_file.read_text()


def test_keepalived_configured_but_stopped_silences_heartbeats(
    hb_amphora: namespaces.Amphora, beats: Beats
) -> None:
    """Beats flow while keepalived runs; once it stops, nothing is sent until its config is gone."""
    amp = hb_amphora
    vrrp = amp.base / "vrrp"
    vrrp.mkdir(exist_ok=True)
    conf = amp.base / Path("vrrp/octavia-keepalived.conf")
    conf.write_text("vrrp_script noop {\n    script /bin/true\n    interval 5\n}\n")
    argv = [
        "keepalived",
        "-n",
        "-l",
        "-D",
        "-f",
        str(conf),
        "-p",
        str(amp.base / Path("vrrp/octavia-keepalived.pid")),
    ]
    argv += ["-r", str(vrrp / "vrrp.pid"), "-c", str(vrrp / "checkers.pid")]
    keepalived = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{amp.name}", "--", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert namespaces.wait_until(lambda: (amp.base / Path("vrrp/octavia-keepalived.pid")).exists(), 5)
        beats.drain()
        beats.next()  # keepalived alive: heartbeats go on
        namespaces.kill_pid(keepalived.pid)
        keepalived.wait(5)
        time.sleep(0.3)
        beats.drain()
        with pytest.raises(AssertionError, match="no heartbeat"):
            beats.next(timeout=3.5)
        assert "keepalived is configured but" in amp.log_file.read_text()
    finally:
        namespaces.kill_pid(keepalived.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            keepalived.wait(5)
    conf.unlink()
    beats.next()  # the configuration is gone: heartbeats resume

"""UDP and SCTP listeners (keepalived LVS) through the API, with real keepalived and real UDP members.

Everything up to the kernel runs for real: validation by keepalived itself, the keepalived lifecycle,
status, the health-check scripts against real UDP members. Forwarding needs IPVS: those tests skip,
saying why, where ``/proc/net/ip_vs`` is absent; there the agent must say so itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amphora_agent.keepalived import config_text
from amphora_agent.probes import health_checker
from lab import namespaces

pytestmark = pytest.mark.integration

UDP_LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"  # lvs/udp-listener.conf: 198.51.100.40:53
FIXTURE_IDS = {
    "udp-listener.conf": UDP_LISTENER,
    "sctp-listener.conf": "bcf6b098-62ae-49b5-a07f-94bf29157ab9",
    "udp-dualstack.conf": "156bcaaf-e533-4a60-bfb8-55794557f4ab",
}
MEMBERS = ("203.0.113.61", "203.0.113.62")
IPVS = Path("/proc/net/ip_vs")
ECHO_MEMBER = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, peer = s.recvfrom(99)
    s.sendto(sys.argv[1].encode(), peer)
"""  # a member answering its own address, in the member namespace
needs_ipvs = pytest.mark.skipif(not IPVS.exists(), reason=f"no IPVS in this kernel ({IPVS} is absent)")
without_ipvs = pytest.mark.skipif(IPVS.exists(), reason="this kernel has IPVS: the agent forwards")


def lvs_config(fixtures_dir: Path, name: str, amp: namespaces.Amphora) -> bytes:
    """A controller LVS config with this amphora's base path; its ``net_namespace amphora-haproxy``
    (the controller's constant) is sent as it comes: the agent runs it in its own namespace."""
    return (fixtures_dir / "lvs" / name).read_text().replace("/var/lib/octavia", str(amp.base)).encode()


class UdpMember:
    """A UDP server answering every datagram with its name, in a thread of the test process."""

    def __init__(self, address: str, port: int, name: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self.name = name.encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                _, peer = self.sock.recvfrom(2048)
            except OSError:
                continue
            self.sock.sendto(self.name, peer)

    def close(self) -> None:
        """Stop answering and free the port."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def amp(amphora: namespaces.Amphora) -> namespaces.Amphora:
    """The amphora with the l4 load balancer's VIP on eth1 and its members' subnet on our side."""
    amphora.wire_tenant(
        vips=["198.51.100.40/24"],
        member_addresses=["198.51.100.1/24", *(f"{ip}/24" for ip in MEMBERS)],
        haproxy_side=["203.0.113.2/24"],
    )
    return amphora


@pytest.fixture
def members() -> Iterator[list[UdpMember]]:
    """Members started by the test, closed afterwards."""
    started: list[UdpMember] = []
    yield started
    for member in started:
        member.close()


def run_check(amp: namespaces.Amphora, command: str) -> int:
    """A health-check command line as keepalived runs it: in the haproxy namespace, as root."""
    argv = ["nsenter", f"--net=/run/netns/{amp.haproxy_ns}", "--", *shlex.split(command)]
    return subprocess.run(argv, capture_output=True, timeout=20, check=False).returncode


@pytest.mark.parametrize("name", sorted(FIXTURE_IDS))
def test_controller_lvs_configs_pass_keepalived_and_read_back(
    amp: namespaces.Amphora, fixtures_dir: Path, name: str
) -> None:
    """Each controller LVS config is accepted as it comes (``net_namespace amphora-haproxy``), stored
    (0644) and read back byte for byte; keepalived gets a copy naming the agent's own namespace."""
    listener_id, body = FIXTURE_IDS[name], lvs_config(fixtures_dir, name, amp)
    assert b"\nnet_namespace amphora-haproxy\n" in body and amp.haproxy_ns != "amphora-haproxy"
    with amp.client() as api:
        reply = api.put(f"/1.0/listeners/{amp.amphora_id}/{listener_id}/udp_listener", content=body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["ETag"] == hashlib.md5(body).hexdigest()
        back = api.get(f"/1.0/listeners/{listener_id}/udp_listener")
        assert (back.status_code, back.content) == (200, body)
        assert back.headers["content-type"].startswith("text/plain")
    stored = amp.base / "lvs" / f"octavia-keepalivedlvs-{listener_id}.conf"
    assert stored.stat().st_mode & 0o777 == 0o644
    assert stored.read_bytes() == body
    run = stored.with_name(f"octavia-keepalivedlvs-{listener_id}.run.conf")
    expected = body.replace(b"net_namespace amphora-haproxy", f"net_namespace {amp.haproxy_ns}".encode())
    assert run.read_bytes() == expected
    assert (amp.base / "lvs" / "check" / "udp_check.sh").stat().st_mode & 0o777 == 0o100


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("weight 2", "weigth 2"), "Unknown keyword 'weigth'"),
        (lambda t: t.replace("lb_kind NAT", "lb_kind NOPE"), "unknown [NOPE] routing method"),
        (lambda t: t.replace("net_namespace amp", "net_namespace other-amp"), "is not this amphora's"),
    ],
    ids=["typo", "routing-method", "other-namespace"],
)
def test_broken_lvs_config_is_rejected_with_keepalived_output(
    amp: namespaces.Amphora, fixtures_dir: Path, edit: Callable[[str], str], expected: str
) -> None:
    """A broken LVS config: 400 with keepalived's diagnostics (line numbers), nothing stored."""
    body = edit(lvs_config(fixtures_dir, "udp-listener.conf", amp).decode()).encode()
    with amp.client() as api:
        reply = api.put(f"/1.0/listeners/{amp.amphora_id}/{UDP_LISTENER}/udp_listener", content=body)
        assert reply.status_code == 400
        assert expected in reply.json()["details"]
        assert api.get(f"/1.0/listeners/{UDP_LISTENER}/udp_listener").status_code == 404


@without_ipvs
def test_lifecycle_reports_missing_ipvs_clearly(amp: namespaces.Amphora, fixtures_dir: Path) -> None:
    """Without IPVS: keepalived really starts and fails, the reply says why, status is ERROR with it."""
    body = lvs_config(fixtures_dir, "udp-listener.conf", amp)
    lid = UDP_LISTENER
    with amp.client() as api:
        api.put(f"/1.0/listeners/{amp.amphora_id}/{lid}/udp_listener", content=body).raise_for_status()
        row = api.get("/1.0/listeners").json()[-1]
        assert (row["uuid"], row["type"], row["status"]) == (lid, "UDP", "ERROR")
        assert "/proc/net/ip_vs is absent" in row["reason"]
        bad = api.put(f"/1.0/loadbalancer/{lid}/bogus")
        assert (bad.status_code, bad.json()["details"]) == (400, "Unknown action: bogus")
        reload = api.put(f"/1.0/loadbalancer/{lid}/reload")  # a restart, as the controller sends it
        assert reload.status_code == 500
        assert reload.json()["message"] == f"Failed to restart keepalivedlvs listener {lid}"
        assert "IPVS is not available" in reload.json()["details"]
        assert "Can't initialize ipvs" in reload.json()["details"]  # keepalived's own words
        assert amp.keepalived_processes() == []  # nothing pretends to run
        details = api.get("/1.0/details").json()
        assert lid in details["listeners"]
        assert details["lvs_listener_process_count"] == 0
        assert "IPVS is not available" in details["lvs_listener_errors"][lid]
        stop = api.put(f"/1.0/loadbalancer/{lid}/stop")
        assert (stop.status_code, stop.json()["details"]) == (202, f"keepalivedlvs listener {lid} stoped")
        assert api.delete(f"/1.0/listeners/{lid}").json() == {"message": "OK"}
        missing = api.get(f"/1.0/listeners/{lid}/udp_listener")
        assert (missing.status_code, missing.json()["message"]) == (404, "UDP Listener Not Found")
        assert not (amp.base / "lvs" / f"octavia-keepalivedlvs-{lid}.run.conf").exists()
        assert api.put(f"/1.0/loadbalancer/{lid}/start").json()["message"] == "Loadbalancer Not Found"
        assert api.delete(f"/1.0/listeners/{lid}").status_code == 200
        assert api.get("/1.0/listeners").json() == []


def test_udp_health_check_script_against_real_members(
    amp: namespaces.Amphora, fixtures_dir: Path, members: list[UdpMember]
) -> None:
    """The stored config's MISC_CHECK command lines pass for a listening member, fail for a silent one."""
    body = lvs_config(fixtures_dir, "udp-listener.conf", amp)
    with amp.client() as api:
        api.put(
            f"/1.0/listeners/{amp.amphora_id}/{UDP_LISTENER}/udp_listener", content=body
        ).raise_for_status()
    checks = [m.misc_path for m in config_text.parse_lvs(body.decode()).members if m.misc_path]
    assert [c.split()[1:] for c in checks] == [[MEMBERS[0], "53"], [MEMBERS[1], "53"]]
    members.append(UdpMember(MEMBERS[0], 53, "member-1"))
    assert [run_check(amp, c) for c in checks] == [0, 1]
    members.append(UdpMember(MEMBERS[1], 53, "member-2"))
    members.pop(0).close()
    assert [run_check(amp, c) for c in checks] == [1, 0]


def test_active_standby_check_chain_fails_while_a_listener_cannot_run(
    amp: namespaces.Amphora, fixtures_dir: Path
) -> None:
    """In ACTIVE_STANDBY an LVS listener that should run but has no keepalived fails the VRRP check."""
    body = lvs_config(fixtures_dir, "udp-listener.conf", amp)
    chain = amp.base / "vrrp" / "check_script.sh"
    with amp.client() as api:
        api.put(
            f"/1.0/listeners/{amp.amphora_id}/{UDP_LISTENER}/udp_listener", content=body
        ).raise_for_status()
        api.put(f"/1.0/loadbalancer/{UDP_LISTENER}/start")  # fails without IPVS; it should run all the same
        vrrp = (
            (fixtures_dir / "keepalived" / "vrrp-master.conf")
            .read_text()
            .replace("/var/lib/octavia", str(amp.base))
        )
        api.put("/1.0/vrrp/upload", content=vrrp.encode())  # eth1 exists: keepalived -t is content
    assert (amp.base / "vrrp" / "check_scripts" / "lvs_udp_check.sh").exists()
    running = subprocess.run([str(chain)], capture_output=True, timeout=20, check=False).returncode
    assert (running == 0) == IPVS.exists()
    with amp.client() as api:
        api.put(f"/1.0/loadbalancer/{UDP_LISTENER}/stop").raise_for_status()
    assert subprocess.run([str(chain)], capture_output=True, timeout=20, check=False).returncode == 0


@needs_ipvs
def test_datagrams_reach_both_members_and_a_silent_member_leaves_rotation(
    amp: namespaces.Amphora, fixtures_dir: Path
) -> None:
    """Datagrams to the VIP reach both members, replies come back; a silent member leaves and returns."""
    member_ns = f"{amp.haproxy_ns}-m"
    namespaces.sh("ip", "netns", "add", member_ns)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        namespaces.sh("ip", "-n", member_ns, "link", "set", "lo", "up")
        namespaces.sh(
            *f"ip link add eth2 netns {amp.haproxy_ns} type veth peer name m0 netns {member_ns}".split()
        )
        namespaces.sh("ip", "-n", amp.haproxy_ns, "addr", "add", "203.0.113.1/25", "dev", "eth2")
        namespaces.sh("ip", "-n", amp.haproxy_ns, "link", "set", "eth2", "up")
        namespaces.sh(
            "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.vs.conntrack=1", netns=amp.haproxy_ns
        )
        for ip in MEMBERS:
            namespaces.sh("ip", "-n", member_ns, "addr", "add", f"{ip}/25", "dev", "m0")
        namespaces.sh("ip", "-n", member_ns, "link", "set", "m0", "up")
        namespaces.sh("ip", "-n", member_ns, "route", "add", "default", "via", "203.0.113.1")
        text = lvs_config(fixtures_dir, "udp-listener.conf", amp).decode()
        for slow, fast in (
            ("delay_loop 5", "delay_loop 1"),
            ("delay_before_retry 5", "delay_before_retry 1"),
        ):
            text = text.replace(slow, fast)
        text = text.replace("retry 3", "retry 1")
        for ip in MEMBERS:
            argv = ["nsenter", f"--net=/run/netns/{member_ns}", "--", "python3", "-c", ECHO_MEMBER, ip]
            servers.append(subprocess.Popen(argv, start_new_session=True))
        with amp.client() as api:
            api.put(
                f"/1.0/listeners/{amp.amphora_id}/{UDP_LISTENER}/udp_listener", content=text.encode()
            ).raise_for_status()
            api.put(f"/1.0/loadbalancer/{UDP_LISTENER}/reload").raise_for_status()
            assert api.get("/1.0/listeners").json()[-1]["status"] == "ACTIVE"

        def answers() -> set[bytes]:
            seen = set()
            for _ in range(30):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(0.3)
                    sock.sendto(b"ping", ("198.51.100.40", 53))
                    with contextlib.suppress(OSError):
                        seen.add(sock.recv(99))
            return seen

        assert namespaces.wait_until(lambda: answers() == {ip.encode() for ip in MEMBERS}, 20)
        servers[1].kill()
        assert namespaces.wait_until(lambda: answers() == {MEMBERS[0].encode()}, 20), (
            "the silent member stayed"
        )
        argv = ["nsenter", f"--net=/run/netns/{member_ns}", "--", "python3", "-c", ECHO_MEMBER, MEMBERS[1]]
        servers.append(subprocess.Popen(argv, start_new_session=True))
        assert namespaces.wait_until(lambda: answers() == {ip.encode() for ip in MEMBERS}, 20), (
            "it never came back"
        )
    finally:
        for server in servers:
            server.kill()
            server.wait(5)
        namespaces.sh("ip", "netns", "del", member_ns, check=False)


class SctpResponder:
    """Answers SCTP INITs to one port over a raw socket: with an INIT ACK, or with an ABORT."""

    def __init__(self, port: int, answer: int) -> None:
        self.port, self.answer = port, answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            got = health_checker.parse(data, socket.AF_INET)
            if got is None or got[1] != self.port or got[3] != health_checker.INIT:
                continue
            their_tag = int.from_bytes(got[4][4:8], "big")
            if self.answer == health_checker.INIT_ACK:
                chunk = struct.pack("!BBHIIHHI", health_checker.INIT_ACK, 0, 20, 0x5EED, 65535, 1, 1, 1)
            else:
                chunk = health_checker.abort_chunk()
            self.sock.sendto(health_checker.packet(self.port, got[0], their_tag, chunk), (peer[0], 0))

    def close(self) -> None:
        """Stop answering."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.mark.parametrize(
    ("answer", "code"),
    [(health_checker.INIT_ACK, 0), (health_checker.ABORT, 1), (None, 2)],
    ids=["ack", "abort", "silent"],
)
def test_sctp_health_checker_over_raw_sockets(answer: int | None, code: int) -> None:
    """``amphora-health-checker sctp``: 0 on INIT ACK, 1 on ABORT, 2 when nothing answers."""
    responder = SctpResponder(3868, answer) if answer is not None else None
    try:
        assert health_checker.main(["sctp", "-t", "0.5", "127.0.0.1", "3868"]) == code
    finally:
        if responder:
            responder.close()

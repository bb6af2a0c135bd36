"""UDP and SCTP listeners through real IPVS in the VM: the controller's LVS configs as they come.

The configs keep ``net_namespace amphora-haproxy``, the controller's health checks and timers; only
the VIP is the one this amphora holds (the fixtures' l4 load balancer has another): one amphora
serves one VIP. UDP members answer from the member namespace on the host side; SCTP peers run in
namespaces inside the guest behind NICs of their own (``lab.tenant.GuestPeers``). Heartbeats are
received and decoded as the health manager does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import tenant
from lab.amphora_vm import AMPHORA_ID, Amphora, Controller
from tests.vm.conftest import Ports

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
UDP_LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"
UDP_POOL = "6115f603-b223-4106-9a11-be9183161cfe"
UDP_MEMBERS = {
    "203.0.113.61": "657b7bee-3f52-48b3-89ee-d942eac7b04a",
    "203.0.113.62": "99ab68fa-0184-4a0a-a9a3-70b7c49be397",
}
UDP_DISABLED = "df02afcb-3543-4b54-a797-b8bf6737f324"
SCTP_LISTENER = "bcf6b098-62ae-49b5-a07f-94bf29157ab9"
SCTP_POOL = "81cc993f-28a1-49e7-a4b9-2f353c9568d0"
SCTP_MEMBERS = {
    "203.0.113.71": "e45ca13e-0ff2-4d31-82ab-06296f7c7fc5",
    "203.0.113.72": "19307cea-bb10-42a0-8652-56b781713738",
}
SCTP_ENDPOINTS = {
    "203.0.113.71": ("203.0.113.71:3868",),
    "203.0.113.72": ("203.0.113.72:3868", "203.0.113.72:3869"),
}
FIXTURE_VIP = "198.51.100.40"  # the l4 load balancer's VIP in the fixtures
PAIRS = 1000
HEARTBEAT_INTERVAL = 10  # the fixture agent config's heartbeat_interval
T = TypeVar("T")
Beat = dict[str, Any]


def lvs_body(fixtures: Path, name: str, *changes: tuple[str, str]) -> bytes:
    """A controller LVS config with this amphora's VIP (and a controller-side update, when given)."""
    text = (fixtures / "lvs" / name).read_text().replace(FIXTURE_VIP, tenant.VIP)
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    return text.encode()


def put_and_restart(amp: Amphora, listener_id: str, body: bytes) -> None:
    """``PUT .../udp_listener`` then ``PUT .../reload`` (a restart), as the controller sends them."""
    with amp.controller.client(amp.address) as api:
        put = api.request("PUT", f"/1.0/listeners/{AMPHORA_ID}/{listener_id}/udp_listener", content=body)
        assert put.status_code == 200, put.text
        reload = api.request("PUT", f"/1.0/loadbalancer/{listener_id}/reload")
        assert reload.status_code == 202, reload.text


def udp(networks: tenant.TenantNetworks, count: int) -> tenant.UdpRun:
    """``count`` request/response pairs from the client namespace to the VIP's port 53."""
    return networks.client.call(lambda: tenant.udp_pairs(tenant.VIP, 53, count))


@dataclass
class Members:
    """The UDP members on the host side, by address; restartable."""

    networks: tenant.TenantNetworks
    running: dict[str, tenant.UdpMember] = field(default_factory=dict)

    def start(self, address: str) -> None:
        """Start answering on ``address``:53."""
        self.running[address] = tenant.UdpMember(self.networks.member, address, 53)

    def stop(self, address: str) -> None:
        """Stop answering on ``address``:53."""
        self.running.pop(address).close()


@pytest.fixture(scope="module")
def udp_members(tenant_net: tenant.TenantNetworks) -> Iterator[Members]:
    """Both UDP members answering; they keep running for the reset test (closed at the end)."""
    members = Members(tenant_net)
    for address in UDP_MEMBERS:
        members.start(address)
    yield members
    for address in list(members.running):
        members.stop(address)


@pytest.fixture(scope="module")
def udp_listener(amphora: Amphora, ports: Ports, udp_members: Members, fixtures_dir: Path) -> str:
    """The controller's UDP listener, uploaded and (re)started."""
    put_and_restart(amphora, UDP_LISTENER, lvs_body(fixtures_dir, "udp-listener.conf"))
    return UDP_LISTENER


@pytest.fixture(scope="module")
def guest_peers(amphora: Amphora, ports: Ports) -> Iterator[tuple[tenant.GuestPeers, dict[str, int]]]:
    """SCTP client and members in the guest; the members' pids by address."""
    peers = tenant.GuestPeers(amphora.vm, tuple(SCTP_MEMBERS))
    peers.attach()
    pids = {address: peers.start_member(*SCTP_ENDPOINTS[address]) for address in SCTP_MEMBERS}
    yield peers, pids
    for pid in pids.values():
        peers.stop(pid)


@pytest.fixture(scope="module")
def sctp_listener(
    amphora: Amphora, guest_peers: tuple[tenant.GuestPeers, dict[str, int]], fixtures_dir: Path
) -> str:
    """The controller's SCTP listener, uploaded and (re)started."""
    put_and_restart(amphora, SCTP_LISTENER, lvs_body(fixtures_dir, "sctp-listener.conf"))
    return SCTP_LISTENER


def steady(networks: tenant.TenantNetworks, count: int = 30, timeout: float = 60.0) -> None:
    """Until ``count`` pairs in a row are answered (ARP, the first checks)."""
    deadline = time.monotonic() + timeout
    while udp(networks, count).lost:
        assert time.monotonic() < deadline, "UDP through the VIP never became steady"
        time.sleep(1)


def counted(controller: Controller, listener_id: str, run: Callable[[], T]) -> tuple[T, dict[str, int], Beat]:
    """``run()`` between heartbeats: its result, the listener's summed deltas, the beat they settled in."""
    # the first beat after the drain may have been sampled before earlier traffic ended (sampling
    # and sending take a moment in the VM); the second one was sampled an interval later
    controller.heartbeats(2)
    result = run()
    totals = dict.fromkeys(("rx", "tx", "totconns"), 0)
    deadline = time.monotonic() + 4 * HEARTBEAT_INTERVAL
    while time.monotonic() < deadline:
        beat = controller.heartbeats(1, fresh=False)[0]
        stats = beat["listeners"][listener_id]["stats"]
        for name in totals:
            totals[name] += stats[name]
        if stats["totconns"] == 0 and totals["totconns"]:
            return result, totals, beat
    raise AssertionError(f"the counters of {listener_id} never settled: {totals}")


def within(measured: int, expected: int, tolerance: float = 0.02) -> bool:
    """``measured`` within ``tolerance`` of ``expected``."""
    return abs(measured - expected) <= tolerance * expected


def test_udp_pairs_through_ipvs_follow_the_weights_and_the_heartbeat_counts_them(
    amphora: Amphora, udp_listener: str, tenant_net: tenant.TenantNetworks
) -> None:
    """1,000 pairs, 0 lost, split by the weights (1 and 2); rx, tx and totconns within 2 % of them."""
    steady(tenant_net)
    run, totals, beat = counted(amphora.controller, udp_listener, lambda: udp(tenant_net, PAIRS))
    assert (run.sent, run.lost) == (PAIRS, 0)
    assert abs(run.share("203.0.113.61") - 1 / 3) < 0.05, run.answers
    assert abs(run.share("203.0.113.62") - 2 / 3) < 0.05, run.answers
    assert within(totals["rx"], run.request_bytes), (totals, run)
    assert within(totals["tx"], run.reply_bytes), (totals, run)
    assert within(totals["totconns"], PAIRS), totals
    pool = beat["pools"][UDP_POOL]
    assert pool == {
        "status": "UP",
        "members": {**dict.fromkeys(UDP_MEMBERS.values(), "UP"), UDP_DISABLED: "MAINT"},
    }


def test_a_weight_update_evens_the_split(
    amphora: Amphora, udp_listener: str, tenant_net: tenant.TenantNetworks, fixtures_dir: Path
) -> None:
    """The controller's member update (weight 2 -> 1) then reload: each member 40-60 % of 1,000 pairs."""
    body = lvs_body(fixtures_dir, "udp-listener.conf", ("weight 2", "weight 1"))
    put_and_restart(amphora, udp_listener, body)
    steady(tenant_net)
    run = udp(tenant_net, PAIRS)
    assert (run.sent, run.lost) == (PAIRS, 0)
    assert all(0.4 <= run.share(address) <= 0.6 for address in UDP_MEMBERS), run.answers


def wait_statuses(
    controller: Controller, wanted: dict[tuple[str, str], str], timeout: float
) -> dict[str, float]:
    """Seconds until heartbeats report each (pool, member) with its status, by member."""
    started = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(wanted):
        assert time.monotonic() - started < timeout, f"not within {timeout:.0f} s: {wanted}, seen {seen}"
        beat = controller.heartbeats(1, fresh=False, timeout=timeout)[0]
        for (pool, member), status in wanted.items():
            if member not in seen and beat["pools"].get(pool, {}).get("members", {}).get(member) == status:
                seen[member] = time.monotonic() - started
    return seen


def test_sctp_associations_through_ipvs(
    sctp_listener: str, guest_peers: tuple[tenant.GuestPeers, dict[str, int]]
) -> None:
    """Associations from the guest's client namespace through the VIP NIC reach a member (``sh``)."""
    peers, _ = guest_peers
    answers, failed = peers.associations(tenant.VIP, 3868, 20)
    assert failed == 0 and sum(answers.values()) == 20
    assert len(answers) == 1 and set(answers) <= set(SCTP_MEMBERS)  # source hashing: one member


def test_stopped_members_are_marked_down_reported_and_skipped(
    amphora: Amphora,
    udp_listener: str,
    sctp_listener: str,
    udp_members: Members,
    guest_peers: tuple[tenant.GuestPeers, dict[str, int]],
    tenant_net: tenant.TenantNetworks,
) -> None:
    """A stopped UDP and SCTP member: the health checks take them out, heartbeats say DOWN, traffic moves.

    Bounds: the controller's delay x (retries + 1) plus one heartbeat interval (keepalived's first
    failing check comes up to one delay after the stop, then it retries ``retry`` times).
    """
    peers, pids = guest_peers
    serving = peers.associations(tenant.VIP, 3868, 1)[0].most_common(1)[0][0]
    other = next(address for address in SCTP_MEMBERS if address != serving)
    controller = amphora.controller
    controller.drain("heartbeat")
    udp_members.stop("203.0.113.61")
    peers.stop(pids[serving])
    udp_member, sctp_member = UDP_MEMBERS["203.0.113.61"], SCTP_MEMBERS[serving]
    down = wait_statuses(controller, {(UDP_POOL, udp_member): "DOWN", (SCTP_POOL, sctp_member): "DOWN"}, 90)
    print(f"reported DOWN after: UDP member {down[udp_member]:.1f} s, SCTP member {down[sctp_member]:.1f} s")
    for listener_id in (UDP_LISTENER, SCTP_LISTENER):  # keepalived's own account, for the record
        log = amphora.guest(
            "cat", f"/var/lib/octavia/lvs/octavia-keepalivedlvs-{listener_id}.log", check=False
        )
        print(*[line for line in log.splitlines() if "failed" in line or "Removing" in line][-2:], sep="\n")
    assert down[udp_member] <= 5 * (3 + 1) + HEARTBEAT_INTERVAL
    assert down[sctp_member] <= 10 * (2 + 1) + HEARTBEAT_INTERVAL
    run = udp(tenant_net, 100)
    assert (run.lost, set(run.answers)) == (0, {"203.0.113.62"})
    answers, failed = peers.associations(tenant.VIP, 3868, 10)
    assert (failed, set(answers)) == (0, {other})

    udp_members.start("203.0.113.61")  # back for the reset test
    controller.drain("heartbeat")
    wait_statuses(controller, {(UDP_POOL, udp_member): "UP"}, 60)


def test_deleting_the_sctp_listener_removes_its_virtual_server(
    amphora: Amphora, sctp_listener: str, guest_peers: tuple[tenant.GuestPeers, dict[str, int]]
) -> None:
    """``DELETE /1.0/listeners/<id>``: keepalived stops, IPVS forgets the service, heartbeats drop it."""
    with amphora.controller.client(amphora.address) as api:
        deleted = api.request("DELETE", f"/1.0/listeners/{sctp_listener}")
        assert (deleted.status_code, deleted.json()) == (200, {"message": "OK"})
        assert api.request("GET", f"/1.0/listeners/{sctp_listener}/udp_listener").status_code == 404
        assert sctp_listener not in {row.uuid for row in api.listeners()}
    ipvs = amphora.guest("ip", "netns", "exec", "amphora-haproxy", "ipvsadm", "-Ln")
    assert "SCTP" not in ipvs and f"UDP  {tenant.VIP}:53" in ipvs
    beat = amphora.controller.heartbeats(1)[0]
    assert sctp_listener not in beat["listeners"] and SCTP_POOL not in beat["pools"]
    assert UDP_LISTENER in beat["listeners"]
    peers, _ = guest_peers
    assert peers.associations(tenant.VIP, 3868, 2)[1] == 2  # nothing answers any more

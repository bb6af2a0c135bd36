"""UDP and SCTP listeners as octavia_* families: table tests on real ipvsadm and /proc/net/ip_vs outputs.

The kernel here has no IPVS: the tables are the ones in ``tests/data/ipvs`` (the layout ipvsadm and
the kernel print for the controller's LVS fixtures), read through the heartbeat's own parsers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amphora_agent.health import lvs_stats
from amphora_agent.keepalived import config_text
from amphora_agent.metrics import l4, render
from amphora_agent.metrics.exposition import Exposition, parse
from tests.conftest import FIXTURES
from tests.unit.test_lvs_stats import (
    DUAL,
    DUAL_M4,
    DUAL_M6,
    LISTING,
    SCTP,
    SCTP_M1,
    SCTP_M2,
    STATS,
    TABLE,
    UDP,
    UDP_M1,
    UDP_M2,
    UDP_OFF,
    UDP_POOL,
    FakeKernel,
    make_source,
    without,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "prometheus"
CONFIGS = {
    UDP: "udp-listener.conf",
    SCTP: "sctp-listener.conf",
    DUAL: "udp-dualstack.conf",
}
SCTP_POOL = f"81cc993f-28a1-49e7-a4b9-2f353c9568d0:{SCTP}"
DUAL_POOL = f"19331a5d-2ff9-4c6e-9259-f81ac91bade8:{DUAL}"
UDP_POOL_LABEL = f"{UDP_POOL}:{UDP}"


def snapshot(
    listing: str | None = LISTING, stats: str | None = STATS, table: str | None = TABLE
) -> lvs_stats.LvsSnapshot:
    """The three fixture listeners running, with the given tables (None: unreadable)."""
    configs = {i: config_text.parse_lvs((FIXTURES / "lvs" / name).read_text()) for i, name in CONFIGS.items()}
    return lvs_stats.LvsSnapshot(
        tuple(configs),
        configs,
        True,
        lvs_stats.parse_ipvsadm(listing) if listing is not None else None,
        lvs_stats.parse_ipvsadm(stats) if stats is not None else None,
        lvs_stats.parse_ip_vs(table) if table is not None else None,
    )


def exposed(snap: lvs_stats.LvsSnapshot) -> Exposition:
    """The families as a scrape would read them."""
    return parse("".join(family.text() for family in l4.families(snap)))


def value(found: Exposition, name: str, **labels: str) -> str | None:
    """The value of the one sample of ``name`` with exactly ``labels``, None when absent."""
    hits = [s.value for s in found.samples if s.name == name and s.labels == labels]
    assert len(hits) <= 1
    return hits[0] if hits else None


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        ("octavia_listener_status", {"listener": UDP, "state": "UP"}, "1"),
        ("octavia_listener_status", {"listener": UDP, "state": "DOWN"}, "0"),
        ("octavia_listener_current_sessions", {"listener": UDP}, "6"),  # active + inactive entries
        ("octavia_listener_sessions_total", {"listener": UDP}, "12"),
        ("octavia_listener_connections_total", {"listener": UDP}, "12"),
        ("octavia_listener_bytes_in_total", {"listener": UDP}, "2480"),
        ("octavia_listener_bytes_out_total", {"listener": UDP}, "3914"),
        ("octavia_listener_packets_in_total", {"listener": UDP}, "40"),
        ("octavia_listener_packets_out_total", {"listener": UDP}, "38"),
        ("octavia_listener_bytes_in_total", {"listener": SCTP}, "123456789"),
        # every VIP of a dual-stack listener counts
        ("octavia_listener_sessions_total", {"listener": DUAL}, "12"),
        ("octavia_listener_bytes_in_total", {"listener": DUAL}, "6397472"),
        ("octavia_listener_packets_out_total", {"listener": DUAL}, "95"),
        ("octavia_pool_status", {"pool": UDP_POOL_LABEL, "state": "UP"}, "1"),
        ("octavia_pool_active_members", {"pool": UDP_POOL_LABEL}, "2"),
        ("octavia_pool_active_members", {"pool": SCTP_POOL}, "1"),  # the other one drains
        ("octavia_pool_current_sessions", {"pool": DUAL_POOL}, "12"),
        ("octavia_pool_sessions_total", {"pool": UDP_POOL_LABEL}, "12"),
        ("octavia_pool_bytes_out_total", {"pool": SCTP_POOL}, "98765432"),
        ("octavia_member_status", {"pool": UDP_POOL_LABEL, "member": UDP_M1, "state": "UP"}, "1"),
        ("octavia_member_status", {"pool": UDP_POOL_LABEL, "member": UDP_OFF, "state": "MAINT"}, "1"),
        ("octavia_member_status", {"pool": SCTP_POOL, "member": SCTP_M2, "state": "DRAIN"}, "1"),
        ("octavia_member_status", {"pool": SCTP_POOL, "member": SCTP_M2, "state": "UP"}, "0"),
        ("octavia_member_weight", {"pool": UDP_POOL_LABEL, "member": UDP_M2}, "2"),
        ("octavia_member_weight", {"pool": SCTP_POOL, "member": SCTP_M2}, "0"),
        ("octavia_member_current_sessions", {"pool": UDP_POOL_LABEL, "member": UDP_M2}, "4"),
        ("octavia_member_sessions_total", {"pool": SCTP_POOL, "member": SCTP_M1}, "3"),
        ("octavia_member_bytes_in_total", {"pool": DUAL_POOL, "member": DUAL_M4}, "6387472"),
        ("octavia_member_packets_in_total", {"pool": DUAL_POOL, "member": DUAL_M6}, "100"),
        ("octavia_member_bytes_in_total", {"pool": UDP_POOL_LABEL, "member": UDP_OFF}, None),  # disabled
        ("octavia_member_weight", {"pool": UDP_POOL_LABEL, "member": UDP_OFF}, None),
    ],
)
def test_fixture_tables_give_these_samples(name: str, labels: dict[str, str], expected: str | None) -> None:
    """One sample per row: its value from the fixture tables (None: no such sample)."""
    assert value(exposed(snapshot()), name, **labels) == expected


def test_label_keys_and_types_are_haproxys() -> None:
    """The same label keys as the renamed haproxy families, and the same type where haproxy has the family."""
    haproxy = parse(b"".join(render.rewrite((DATA / "haproxy-2.6-prometheus-cfg.txt").read_bytes())).decode())
    keys = {s.name: set(s.labels) for s in haproxy.samples}
    found = exposed(snapshot())
    for sample in found.samples:
        kind = sample.name.split("_")[1]
        expected = {"listener": {"listener"}, "pool": {"pool"}, "member": {"pool", "member"}}[kind]
        assert set(sample.labels) - {"state"} == expected, sample
        if sample.name in keys:
            assert set(sample.labels) == keys[sample.name], sample
    for name, kind in found.types.items():
        assert haproxy.types.get(name, kind) == kind, name
    assert set(found.families()) - set(haproxy.families()) == {
        "octavia_listener_packets_in_total",
        "octavia_listener_packets_out_total",
        "octavia_pool_packets_in_total",
        "octavia_pool_packets_out_total",
        "octavia_member_packets_in_total",
        "octavia_member_packets_out_total",
    }


def test_a_member_the_kernel_dropped_is_down_without_figures() -> None:
    """Not in the kernel's tables: state DOWN, and its counters left out (no fake zeros)."""
    gone = "203.0.113.62:53"
    found = exposed(snapshot(without(LISTING, gone), without(STATS, gone), without(TABLE, "CB00713E")))
    assert value(found, "octavia_member_status", pool=UDP_POOL_LABEL, member=UDP_M2, state="DOWN") == "1"
    for family in ("current_sessions", "weight", "sessions_total", "bytes_in_total", "packets_out_total"):
        assert value(found, f"octavia_member_{family}", pool=UDP_POOL_LABEL, member=UDP_M2) is None
    assert value(found, "octavia_pool_active_members", pool=UDP_POOL_LABEL) == "1"


def test_a_pending_restart_shows_as_down() -> None:
    """RESTARTING (a new config waits for its restart) is not one of haproxy's states: DOWN."""
    snap = snapshot(table=without(TABLE, "CB00713E"))
    snap = lvs_stats.LvsSnapshot(
        snap.open_ids, snap.configs, True, snap.listing, snap.stats, snap.table, frozenset({UDP})
    )
    found = exposed(snap)
    assert value(found, "octavia_member_status", pool=UDP_POOL_LABEL, member=UDP_M2, state="DOWN") == "1"


@pytest.mark.parametrize(
    ("listing", "stats", "table", "present", "absent"),
    [
        (
            None,
            None,
            None,
            {"octavia_listener_status"},
            {"octavia_pool_status", "octavia_listener_bytes_in_total"},
        ),
        (LISTING, None, None, {"octavia_listener_current_sessions"}, {"octavia_listener_sessions_total"}),
        (
            None,
            STATS,
            None,
            {"octavia_pool_sessions_total"},
            {"octavia_member_weight", "octavia_pool_status"},
        ),
        (None, None, TABLE, {"octavia_member_status"}, {"octavia_member_current_sessions"}),
    ],
)
def test_what_cannot_be_read_is_left_out(
    listing: str | None, stats: str | None, table: str | None, present: set[str], absent: set[str]
) -> None:
    """Each table feeds its own families; an unreadable one costs only those."""
    families = set(exposed(snapshot(listing, stats, table)).families())
    assert present <= families
    assert not absent & families


def test_without_the_kernel_only_the_listener_status() -> None:
    """IPVS not read (absent from this kernel): running listeners are UP, nothing else is claimed."""
    found = exposed(lvs_stats.LvsSnapshot((UDP, SCTP)))
    assert found.families() == ["octavia_listener_status"]
    assert value(found, "octavia_listener_status", listener=SCTP, state="UP") == "1"
    assert l4.families(lvs_stats.LvsSnapshot()) == []


def test_the_heartbeats_source_feeds_the_families(tmp_path: Path) -> None:
    """Through ``LvsStats.snapshot``: running, enabled listeners only, one kernel read for both uses."""
    kernel = FakeKernel()
    source, _ = make_source(tmp_path, FIXTURES, {UDP, SCTP}, kernel)
    found = exposed(source.snapshot())
    assert {s.labels["listener"] for s in found.samples if s.name == "octavia_listener_status"} == {UDP, SCTP}
    assert value(found, "octavia_listener_sessions_total", listener=UDP) == "12"
    assert len(kernel.calls) == 3


def test_the_families_written_are_the_documented_ones() -> None:
    """With every table readable, each kind gets exactly the families ``l4.WRITTEN`` documents."""
    documented = {l4.PREFIXES[kind] + suffix for kind, suffixes in l4.WRITTEN.items() for suffix in suffixes}
    assert set(exposed(snapshot()).families()) == documented

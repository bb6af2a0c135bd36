"""LVS listeners in the heartbeat: ipvsadm and /proc/net/ip_vs tables, samples, and the source itself.

The tables in ``tests/data/ipvs`` are written in the exact layout ipvsadm 1.31 and the kernel print
(column padding, trailing blanks, truncation rules) for the controller's LVS fixtures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from amphora_agent.errors import CommandFailed
from amphora_agent.health import lvs_stats, sender
from amphora_agent.health.samples import ListenerSample, PoolSample, Sample
from amphora_agent.keepalived import config_text
from amphora_agent.layout import Layout
from amphora_agent.system import keepalived

DATA = Path(__file__).resolve().parents[1] / "data" / "ipvs"
LISTING = (DATA / "ipvsadm-Ln.txt").read_text()
STATS = (DATA / "ipvsadm-Ln-stats-exact.txt").read_text()
TABLE = (DATA / "proc-net-ip_vs.txt").read_text()

UDP = "8493c22a-786d-4871-aaa0-c4d82fe865d9"  # listener ids of the fixtures
SCTP = "bcf6b098-62ae-49b5-a07f-94bf29157ab9"
DUAL = "156bcaaf-e533-4a60-bfb8-55794557f4ab"
UDP_POOL = "6115f603-b223-4106-9a11-be9183161cfe"
UDP_M1, UDP_M2 = "657b7bee-3f52-48b3-89ee-d942eac7b04a", "99ab68fa-0184-4a0a-a9a3-70b7c49be397"
UDP_OFF = "df02afcb-3543-4b54-a797-b8bf6737f324"
SCTP_M1, SCTP_M2 = "e45ca13e-0ff2-4d31-82ab-06296f7c7fc5", "19307cea-bb10-42a0-8652-56b781713738"
DUAL_M4, DUAL_M6 = "c2393b43-7563-4749-bd82-ab2139dca169", "5d2c7fcc-5a01-4741-9f4c-379ddb019c94"
DISABLED = "d15ab1ed-0000-4000-8000-000000000001"  # a listener stored as disabled


def fixture(fixtures_dir: Path, name: str) -> str:
    """A controller LVS config."""
    return (fixtures_dir / "lvs" / name).read_text()


def without(text: str, *needles: str) -> str:
    """``text`` without the lines containing any of ``needles``."""
    return "".join(line for line in text.splitlines(True) if not any(n in line for n in needles))


def no_checker(config_text: str) -> str:
    """The UDP fixture with its MISC_CHECK blocks removed (a pool without a health monitor)."""
    return without(config_text, "MISC_CHECK", "misc_path", "misc_timeout", "        }\n")


# -- tables ------------------------------------------------------------------------------------
def test_ipvsadm_listing_keys_every_service_by_protocol_address_and_port() -> None:
    """IPv4 and bracketed IPv6 services, SCTP with its single-blank layout, real servers with columns."""
    table = lvs_stats.parse_ipvsadm(LISTING)
    assert list(table) == [
        ("UDP", "198.51.100.40", 53),
        ("SCTP", "198.51.100.40", 3868),
        ("UDP", "198.51.100.50", 5060),
        ("UDP", "2001:db8:101::50", 5060),
    ]
    reals = table[("UDP", "198.51.100.40", 53)].reals
    assert [(r.address, r.port, r.values) for r in reals] == [
        ("203.0.113.61", 53, {"Forward": "Masq", "Weight": "1", "ActiveConn": "0", "InActConn": "2"}),
        ("203.0.113.62", 53, {"Forward": "Masq", "Weight": "2", "ActiveConn": "1", "InActConn": "3"}),
    ]
    assert table[("UDP", "2001:db8:101::50", 5060)].reals[0].address == "2001:db8:200::81"


def test_ipvsadm_stats_give_exact_counters_for_services_and_reals() -> None:
    """``--stats --exact``: the service's columns apply to its real servers too; wide numbers parse."""
    table = lvs_stats.parse_ipvsadm(STATS)
    sctp = table[("SCTP", "198.51.100.40", 3868)]
    assert sctp.values == {
        "Conns": "3",
        "InPkts": "1210",
        "OutPkts": "1187",
        "InBytes": "123456789",
        "OutBytes": "98765432",
    }
    assert sctp.reals[1].values["Conns"] == "0"


def test_kernel_table_decodes_hex_addresses_to_the_same_keys_and_weights() -> None:
    """/proc/net/ip_vs (hex IPv4, expanded IPv6, hex ports) names the same services as ipvsadm."""
    kernel, listing = lvs_stats.parse_ip_vs(TABLE), lvs_stats.parse_ipvsadm(LISTING)
    assert list(kernel) == list(listing)
    for key, service in kernel.items():
        assert [(r.address, r.port, r.values["Weight"]) for r in service.reals] == [
            (r.address, r.port, r.values["Weight"]) for r in listing[key].reals
        ]


@pytest.mark.parametrize(
    ("text", "parse"),
    [
        ("Prot LocalAddress:Port Scheduler Flags\nUDP  10.0.0.1 rr\n", lvs_stats.parse_ipvsadm),
        ("Prot LocalAddress:Port Scheduler Flags\nUDP  ZZ000001:0035 rr\n", lvs_stats.parse_ip_vs),
        ("Can't initialize ipvs: Protocol not available\n", lvs_stats.parse_ipvsadm),
        ("Prot LocalAddress:Port Scheduler Flags\nUDP  [2001:db8::zz]:53 rr\n", lvs_stats.parse_ipvsadm),
    ],
)
def test_tables_that_are_not_ipvs_output_are_rejected(
    text: str, parse: Callable[[str], lvs_stats.IpvsTable]
) -> None:
    """Anything but the tools' layout raises IpvsError (never a wrong figure)."""
    with pytest.raises(lvs_stats.IpvsError):
        parse(text)


def test_empty_tables_and_firewall_mark_services() -> None:
    """No service at all is an empty table; fwmark services (not the controller's) are skipped."""
    header = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
    assert lvs_stats.parse_ipvsadm(header) == {}
    fwm = header + "FWM  7 rr\n  -> 203.0.113.9:0                Masq    1      0          0\n"
    assert lvs_stats.parse_ipvsadm(fwm) == {}


# -- samples -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "listing", "stats", "expected"),
    [
        ("udp-listener.conf", LISTING, STATS, ListenerSample("OPEN", 1, 12, 2480, 3914)),
        ("sctp-listener.conf", LISTING, STATS, ListenerSample("OPEN", 3, 3, 123456789, 98765432)),
        # every VIP counts (the existing agent reads only the first of each family)
        ("udp-dualstack.conf", LISTING, STATS, ListenerSample("OPEN", 4, 12, 6397472, 16490)),
        (
            "udp-dualstack.conf",
            without(LISTING, "[2001"),
            STATS,
            ListenerSample("OPEN", 0, 12, 6397472, 16490),
        ),
        ("udp-listener.conf", without(LISTING, "198.51.100.40:53"), STATS, ListenerSample("OPEN")),
        ("udp-listener.conf", LISTING, without(STATS, "UDP  198.51.100.40:53"), ListenerSample("OPEN")),
        ("udp-listener.conf", "", "", ListenerSample("OPEN")),
    ],
)
def test_listener_sample(
    fixtures_dir: Path, name: str, listing: str, stats: str, expected: ListenerSample
) -> None:
    """scur = ActiveConn of the real servers, stot/bin/bout = the services' Conns/InBytes/OutBytes."""
    config = config_text.parse_lvs(fixture(fixtures_dir, name))
    assert (
        lvs_stats.listener_sample(config, lvs_stats.parse_ipvsadm(listing), lvs_stats.parse_ipvsadm(stats))
        == expected
    )


def test_a_service_of_another_protocol_at_the_same_address_is_not_the_listener(fixtures_dir: Path) -> None:
    """A TCP service on the UDP listener's VIP and port gives no figures to the UDP listener."""
    config = config_text.parse_lvs(fixture(fixtures_dir, "udp-listener.conf"))
    listing = lvs_stats.parse_ipvsadm(LISTING.replace("UDP  198.51.100.40:53", "TCP  198.51.100.40:53"))
    assert lvs_stats.listener_sample(config, listing, lvs_stats.parse_ipvsadm(STATS)) == ListenerSample(
        "OPEN"
    )


TABLE_WITHOUT_REALS = without(TABLE, "  -> ")
UP_UP_MAINT = {UDP_M1: "UP", UDP_M2: "UP", UDP_OFF: "MAINT"}


@pytest.mark.parametrize(
    ("name", "edit", "table", "restarting", "expected"),
    [
        ("udp-listener.conf", None, TABLE, False, PoolSample("UP", UP_UP_MAINT)),
        (
            "udp-listener.conf",
            None,
            without(TABLE, "CB00713E"),
            False,
            PoolSample("UP", {UDP_M1: "UP", UDP_M2: "DOWN", UDP_OFF: "MAINT"}),
        ),
        (
            "udp-listener.conf",
            None,
            without(TABLE, "CB00713E"),
            True,
            PoolSample("UP", {UDP_M1: "UP", UDP_M2: "RESTARTING", UDP_OFF: "MAINT"}),
        ),
        ("sctp-listener.conf", None, TABLE, False, PoolSample("UP", {SCTP_M1: "UP", SCTP_M2: "DRAIN"})),
        ("udp-dualstack.conf", None, TABLE, False, PoolSample("UP", {DUAL_M4: "UP", DUAL_M6: "UP"})),
        (
            "udp-dualstack.conf",
            None,
            without(TABLE, "0000:0081]"),
            False,
            PoolSample("UP", {DUAL_M4: "UP", DUAL_M6: "DOWN"}),
        ),
        (
            "udp-listener.conf",
            None,
            TABLE_WITHOUT_REALS,
            False,
            PoolSample("DOWN", {UDP_M1: "DOWN", UDP_M2: "DOWN", UDP_OFF: "MAINT"}),
        ),
        (
            "udp-listener.conf",
            None,
            "",
            True,
            PoolSample("DOWN", {UDP_M1: "RESTARTING", UDP_M2: "RESTARTING", UDP_OFF: "MAINT"}),
        ),
        (
            "udp-listener.conf",
            no_checker,
            TABLE,
            False,
            PoolSample("UP", {UDP_M1: "no check", UDP_M2: "no check", UDP_OFF: "MAINT"}),
        ),
        (
            "udp-listener.conf",
            no_checker,
            TABLE_WITHOUT_REALS,
            False,
            PoolSample("UP", {UDP_M1: "no check", UDP_M2: "no check", UDP_OFF: "MAINT"}),
        ),
        (
            "udp-listener.conf",
            lambda text: without(
                text, "Member", "real_server", "weight", "uthreshold", "MISC", "misc", "    }\n"
            ),
            TABLE,
            False,
            PoolSample("UP", {}),
        ),
        ("udp-listener.conf", lambda text: without(text, "# Configuration for Pool"), TABLE, False, None),
        (
            "udp-listener.conf",
            lambda text: text.replace(
                f"# Configuration for Pool {UDP_POOL}", f"# Pool {UDP_POOL} is disabled"
            ),
            TABLE,
            False,
            None,
        ),
    ],
)
def test_pool_sample(
    fixtures_dir: Path,
    name: str,
    edit: Callable[[str], str] | None,
    table: str,
    restarting: bool,
    expected: PoolSample | None,
) -> None:
    """Members: MAINT when disabled, DOWN/RESTARTING when the kernel lacks them, DRAIN at weight 0."""
    text = fixture(fixtures_dir, name)
    config = config_text.parse_lvs(edit(text) if edit else text)
    assert lvs_stats.pool_sample(config, lvs_stats.parse_ip_vs(table), restarting) == expected


# -- the source --------------------------------------------------------------------------------
class FakeKernel:
    """ipvsadm and the kernel table as a test wants them; counts the calls."""

    def __init__(self, unavailable: str | None = None) -> None:
        self.unavailable = unavailable
        self.listing: str | Exception = LISTING
        self.stats: str | Exception = STATS
        self.table: str | Exception = TABLE
        self.calls: list[str] = []

    def ipvsadm(self, namespace: str, stats: bool) -> str:
        """What ``ipvsadm -Ln [--stats --exact]`` prints in ``namespace``."""
        self.calls.append(f"ipvsadm {namespace} {stats}")
        answer = self.stats if stats else self.listing
        if isinstance(answer, Exception):
            raise answer
        return answer

    def read_table(self, namespace: str) -> str:
        """What /proc/net/ip_vs holds in ``namespace``."""
        self.calls.append(f"table {namespace}")
        if isinstance(self.table, Exception):
            raise self.table
        return self.table


def make_source(
    tmp_path: Path, fixtures_dir: Path, running: set[str], kernel: FakeKernel
) -> tuple[lvs_stats.LvsStats, Layout]:
    """Stored configs for the three fixtures and a disabled listener; ``running`` say they run."""
    paths = Layout(tmp_path, tmp_path / "certs")
    paths.lvs_dir.mkdir()
    for listener_id, name in (
        (UDP, "udp-listener.conf"),
        (SCTP, "sctp-listener.conf"),
        (DUAL, "udp-dualstack.conf"),
    ):
        paths.lvs(listener_id).write_text(fixture(fixtures_dir, name))
        paths.lvs(listener_id, "check.pid").write_text("1\n")
        os.utime(paths.lvs(listener_id), (1000, 1000))  # the checker started after the config was stored
    paths.lvs(DISABLED).write_text(f"# Listener {DISABLED} is disabled\n\nnet_namespace amphora-haproxy\n")
    source = lvs_stats.LvsStats(
        paths,
        lambda listener_id: listener_id in running,
        lambda: "amphora-haproxy",
        lambda: kernel.unavailable,
        kernel.ipvsadm,
        kernel.read_table,
    )
    return source, paths


def test_running_enabled_listeners_with_counters_and_bare_pool_ids(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """Only running, enabled listeners are listed; pools are keyed by the bare pool id."""
    kernel = FakeKernel()
    source, _ = make_source(tmp_path, fixtures_dir, {UDP, DUAL, DISABLED}, kernel)
    sample = source()
    assert sample.listeners == {
        UDP: ListenerSample("OPEN", 1, 12, 2480, 3914),
        DUAL: ListenerSample("OPEN", 4, 12, 6397472, 16490),
    }
    assert sample.pools == {
        UDP_POOL: PoolSample("UP", UP_UP_MAINT),
        "19331a5d-2ff9-4c6e-9259-f81ac91bade8": PoolSample("UP", {DUAL_M4: "UP", DUAL_M6: "UP"}),
    }
    assert sample.complete
    assert kernel.calls == [
        "ipvsadm amphora-haproxy False",
        "ipvsadm amphora-haproxy True",
        "table amphora-haproxy",
    ]


def test_a_pending_restart_shows_missing_members_as_restarting(tmp_path: Path, fixtures_dir: Path) -> None:
    """A config newer than the checker's pid file: members the kernel lacks are RESTARTING."""
    kernel = FakeKernel()
    kernel.table = without(TABLE, "CB00713E")
    source, paths = make_source(tmp_path, fixtures_dir, {UDP}, kernel)
    assert source().pools[UDP_POOL].members[UDP_M2] == "DOWN"
    os.utime(paths.lvs(UDP, "check.pid"), (500, 500))
    assert source().pools[UDP_POOL].members[UDP_M2] == "RESTARTING"


def test_unreadable_ipvs_keeps_listeners_open_with_zeros(tmp_path: Path, fixtures_dir: Path) -> None:
    """ipvsadm failing gives OPEN without counters (never counted twice); no kernel table, no pools."""
    kernel = FakeKernel()
    kernel.listing = CommandFailed("ipvsadm failed", "Can't initialize ipvs: Protocol not available")
    kernel.table = FileNotFoundError("/proc/thread-self/net/ip_vs")
    source, _ = make_source(tmp_path, fixtures_dir, {UDP}, kernel)
    assert source() == Sample({UDP: ListenerSample("OPEN", counted=False)})
    assert "ipvsadm amphora-haproxy True" not in kernel.calls
    kernel.listing, kernel.stats = LISTING, "garbage that is no table\n"
    assert source() == Sample({UDP: ListenerSample("OPEN", counted=False)})


def test_without_ipvs_nothing_runs_nothing_is_listed_and_it_is_said_once(
    tmp_path: Path, fixtures_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No IPVS: keepalived cannot run, so no LVS listener is reported; one log line, no kernel reads."""
    kernel = FakeKernel(unavailable="IPVS is not available in this kernel")
    source, _ = make_source(tmp_path, fixtures_dir, set(), kernel)
    with caplog.at_level(logging.WARNING, logger="amphora_agent.health.lvs_stats"):
        assert source() == Sample() and source() == Sample()
    assert [r.getMessage() for r in caplog.records] == [
        "IPVS is not available in this kernel; "
        "heartbeats list no UDP or SCTP listener while keepalived cannot run"
    ]
    assert kernel.calls == []


def test_no_lvs_config_costs_nothing(tmp_path: Path) -> None:
    """Without LVS configs the source asks nothing of the kernel and reports nothing."""
    kernel = FakeKernel(unavailable="no IPVS")
    source = lvs_stats.LvsStats(
        Layout(tmp_path, tmp_path / "certs"), lambda _: True, lambda: "ns", lambda: kernel.unavailable
    )
    assert source() == Sample()
    assert kernel.calls == []


def test_this_kernel_without_ipvs_never_crashes(
    tmp_path: Path, fixtures_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the real readers: a listener said to run is OPEN; without IPVS the reason is logged."""
    paths = Layout(tmp_path, tmp_path / "certs")
    paths.lvs_dir.mkdir()
    paths.lvs(UDP).write_text(fixture(fixtures_dir, "udp-listener.conf"))
    source = lvs_stats.LvsStats(
        paths, lambda _: True, lambda: "no-such-namespace", keepalived.ipvs_unavailable
    )
    with caplog.at_level(logging.WARNING, logger="amphora_agent.health.lvs_stats"):
        sample = source()
    assert sample.listeners == {UDP: ListenerSample("OPEN")}
    if keepalived.ipvs_unavailable() is not None:
        assert "IPVS is not available" in caplog.text


def test_lvs_listeners_reach_the_message_with_deltas(tmp_path: Path, fixtures_dir: Path) -> None:
    """The heartbeat message lists the LVS listener with delta counters and its bare-id pool."""
    kernel = FakeKernel()
    source, _ = make_source(tmp_path, fixtures_dir, {UDP}, kernel)
    last = {UDP: {"bin": 2000, "bout": 3000, "ereq": 0, "stot": 10}}
    message, kept = sender.build_message("amp", 7, source(), last)
    assert message["listeners"] == {
        UDP: {"status": "OPEN", "stats": {"tx": 914, "rx": 480, "conns": 1, "totconns": 2, "ereq": 0}}
    }
    assert message["pools"] == {UDP_POOL: {"status": "UP", "members": UP_UP_MAINT}}
    assert kept == {UDP: {"bin": 2480, "bout": 3914, "ereq": 0, "stot": 12}}

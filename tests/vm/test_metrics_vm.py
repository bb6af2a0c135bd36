"""Prometheus metrics in the amphora VM: a UDP listener's families from the kernel's real IPVS.

The container's kernel has no IPVS, so the LVS part of the metrics is proved here: the agent in the
booted image runs the controller's UDP listener (keepalived LVS, its pool without a health monitor,
so that its two members, which exist nowhere here, stay in IPVS and are scheduled), datagrams go
through the virtual service, and ``amphoractl metrics`` in the guest (what the PROMETHEUS
listener's backend reads on 127.0.0.1:9102) reports them, figure for figure as ``ipvsadm`` does.
haproxy runs the controller's ``prometheus.cfg`` up to its first VIP listener (the exporter and the
internal backend): the VIP itself would need a plugged VIP port.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from amphora_agent.health import lvs_stats
from amphora_agent.metrics.exposition import Exposition, parse
from lab import vm
from lab.amphora_vm import Amphora

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
LB = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5"  # prometheus.cfg
LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"  # lvs/udp-listener.conf: 198.51.100.40:53
POOL = "6115f603-b223-4106-9a11-be9183161cfe:" + LISTENER
MEMBER_1, MEMBER_2 = "657b7bee-3f52-48b3-89ee-d942eac7b04a", "99ab68fa-0184-4a0a-a9a3-70b7c49be397"
DISABLED_MEMBER = "df02afcb-3543-4b54-a797-b8bf6737f324"
NS = ("ip", "netns", "exec", "amphora-haproxy")
SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for i in range(int(sys.argv[1])):\n"
    "    s.sendto(b'metrics-probe-%d' % i, ('198.51.100.40', 53))\n"
)


def without_monitor(fixtures_dir: Path) -> bytes:
    """The controller's UDP listener with a pool that has no health monitor (no MISC_CHECK)."""
    lines = (fixtures_dir / "lvs" / "udp-listener.conf").read_text().splitlines(keepends=True)
    drop = ("MISC_CHECK", "misc_path", "misc_timeout", "HealthMonitor", "        }\n")
    return "".join(line for line in lines if not any(d in line for d in drop)).encode()


def exporter_half(fixtures_dir: Path) -> bytes:
    """The controller's prometheus.cfg up to its first VIP listener."""
    text = (fixtures_dir / "haproxy" / "prometheus.cfg").read_text()
    return text[: text.index("\nfrontend 12aabb74") + 1].encode()


def scrape(amp: Amphora) -> tuple[Exposition, str]:
    """``amphoractl metrics --raw`` in the guest, read, and ``ipvsadm --stats --exact`` right after."""
    text = amp.guest("amphoractl", "metrics", "--raw")
    return parse(text), amp.guest(*NS, "ipvsadm", "-Ln", "--stats", "--exact")


def service_of(stats: str) -> lvs_stats.Service:
    """The UDP listener's virtual service in ``ipvsadm --stats`` output."""
    return lvs_stats.parse_ipvsadm(stats)[("UDP", "198.51.100.40", 53)]


def value(found: Exposition, name: str, **labels: str) -> float | None:
    """The sample of ``name`` with exactly ``labels``, None when absent."""
    hits = [float(s.value) for s in found.samples if s.name == name and s.labels == labels]
    return hits[0] if hits else None


def test_a_udp_listeners_families_follow_the_kernels_ipvs(amphora: Amphora, fixtures_dir: Path) -> None:
    """Statuses, weights, and packets, bytes and connections exactly as IPVS counts them."""
    try:
        check_families(amphora, fixtures_dir)
    finally:  # the VM is shared by the session: leave nothing for the data-plane tests
        with amphora.controller.client(amphora.address) as api:
            for object_id in (LISTENER, LB):
                with contextlib.suppress(Exception):
                    api.delete_listener(object_id)
        amphora.guest(*NS, "ip", "address", "del", "198.51.100.40/32", "dev", "lo", check=False)


def check_families(amphora: Amphora, fixtures_dir: Path) -> None:
    """The UDP listener's families against ``ipvsadm``, before and after 20 datagrams."""
    amphora.guest("modprobe", "ip_vs")
    amphora.guest(*NS, "ip", "address", "add", "198.51.100.40/32", "dev", "lo")  # the VIP, local
    with amphora.controller.client(amphora.address) as api:
        api.put_haproxy_config(LB, exporter_half(fixtures_dir))
        api.reload(LB)
        api.put_udp_listener(LISTENER, without_monitor(fixtures_dir))
        api.start(LISTENER)

    def listed() -> Exposition | None:
        found, _ = scrape(amphora)
        return found if value(found, "octavia_member_weight", pool=POOL, member=MEMBER_2) == 2 else None

    found = vm.wait_for("the UDP listener in IPVS and in the metrics", listed, 120, interval=2.0)
    assert value(found, "octavia_listener_status", listener=LISTENER, state="UP") == 1
    assert value(found, "octavia_pool_status", pool=POOL, state="UP") == 1
    for member in (MEMBER_1, MEMBER_2):  # no health monitor: UP, as haproxy shows "no check"
        assert value(found, "octavia_member_status", pool=POOL, member=member, state="UP") == 1
    assert value(found, "octavia_member_status", pool=POOL, member=DISABLED_MEMBER, state="MAINT") == 1
    assert value(found, "octavia_pool_active_members", pool=POOL) == 2
    assert value(found, "octavia_member_weight", pool=POOL, member=MEMBER_1) == 1

    amphora.guest(*NS, "python3", "-c", SEND, "20")

    def counted_all() -> tuple[Exposition, str] | None:
        # the kernel adds its per-CPU counters into the figures it shows every 2 s (its estimator)
        found, stats = scrape(amphora)
        exported = value(found, "octavia_listener_packets_in_total", listener=LISTENER) or 0
        return (found, stats) if exported >= 20 and int(service_of(stats).values["InPkts"]) >= 20 else None

    after, stats = vm.wait_for("the 20 datagrams in the IPVS counters", counted_all, 30, interval=1.0)
    service = service_of(stats)
    counted = {"packets_in_total": "InPkts", "bytes_in_total": "InBytes", "sessions_total": "Conns"}
    for suffix, column in counted.items():
        assert value(after, f"octavia_listener_{suffix}", listener=LISTENER) == float(service.values[column])
        assert value(after, f"octavia_pool_{suffix}", pool=POOL) == float(service.values[column])
    reals = {real.address: real.values for real in service.reals}
    for member, address in ((MEMBER_1, "203.0.113.61"), (MEMBER_2, "203.0.113.62")):
        packets = value(after, "octavia_member_packets_in_total", pool=POOL, member=member)
        assert packets == float(reals[address]["InPkts"])
    assert len(after.families()) == len(set(after.families()))  # one block per family

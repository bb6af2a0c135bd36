"""Active-standby failover: two agents, one VIP network, the controller's keepalived configs.

Each test breaks the MASTER one way while a client sends requests to the VIP every 20 ms, and checks
that the BACKUP takes the VIP and the requests succeed again; the gap (longest time without a
successful request) is printed. Timers: advert_int 1 s (the smallest VRRPv2 accepts), check script
every 1 s, fall 2, rise 2.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import namespaces
from lab.vrrp import Pair, Prober, Timers, running_pair

pytestmark = pytest.mark.integration

TIMERS = Timers("tests", advert_int=1, interval=1, fall=2, rise=2)
MAX_GAP = 8.0  # seconds; the target is a median of 4 s with the controller's defaults


@pytest.fixture
def pair(workdir: Path, fixtures_dir: Path) -> Iterator[Pair]:
    """A started pair: amp-a MASTER holding the VIP, amp-b BACKUP, requests answered."""
    with running_pair(workdir, fixtures_dir, TIMERS) as started:
        yield started


def fail_over(pair: Pair, break_master: Callable[[], object]) -> float:
    """Break amp-a while probing the VIP; amp-b must take over and serve. Returns the gap."""
    assert pair.master() == 0
    with Prober() as prober:
        assert namespaces.wait_until(lambda: prober.succeeded_since(time.monotonic() - 1.0), 5)
        broken = time.monotonic()
        break_master()
        assert namespaces.wait_until(lambda: pair.master() == 1, 20, 0.05), "amp-b never took the VIP"
        took_over = time.monotonic()
        assert namespaces.wait_until(lambda: prober.succeeded_since(took_over, 10), 15), (
            "no request succeeded"
        )
    gap = prober.gap(broken)
    print(f"failover gap {gap:.2f} s (VIP moved after {took_over - broken:.2f} s)")
    return gap


def test_killed_haproxy_fails_the_check_and_the_backup_takes_over(pair: Pair) -> None:
    """MASTER's haproxy killed (its agent down, so nothing restarts it): the check fails, BACKUP serves."""
    master = pair.amphorae[0]
    master.stop_agent()  # haproxy and keepalived keep running without the agent, as on an amphora

    def kill_haproxy() -> None:
        for pid in master.haproxy_processes():
            os.kill(pid, signal.SIGKILL)

    assert fail_over(pair, kill_haproxy) < MAX_GAP
    master.start_agent()  # reboot recovery: haproxy runs again, keepalived stays BACKUP (nopreempt)
    assert namespaces.wait_until(lambda: bool(master.haproxy_processes()), 10)
    assert pair.master() == 1


def test_stopped_keepalived_hands_the_vip_over(pair: Pair) -> None:
    """``PUT /1.0/vrrp/stop`` on the MASTER: BACKUP takes the VIP, and the stopped one stays stopped."""
    assert fail_over(pair, lambda: pair.vrrp(0, "stop")) < MAX_GAP
    time.sleep(1.5)  # several supervisor passes: a stopped keepalived is not restarted
    assert pair.amphorae[0].keepalived_processes() == []


def test_vip_link_down_moves_the_vip(pair: Pair) -> None:
    """MASTER's eth1 goes down: BACKUP stops hearing adverts, takes the VIP, and serves."""
    master_ns = pair.amphorae[0].haproxy_ns
    assert (
        fail_over(pair, lambda: namespaces.sh("ip", "-n", master_ns, "link", "set", "eth1", "down")) < MAX_GAP
    )


def test_killed_haproxy_with_its_agent_up_is_restarted_in_place(pair: Pair) -> None:
    """MASTER's haproxy killed while its agent runs: restarted at once, requests resume within a second."""
    master = pair.amphorae[0]
    with Prober() as prober:
        assert namespaces.wait_until(lambda: prober.succeeded_since(time.monotonic() - 1.0), 5)
        killed = time.monotonic()
        for pid in master.haproxy_processes():
            os.kill(pid, signal.SIGKILL)
        assert namespaces.wait_until(lambda: prober.succeeded_since(killed + 0.1, 10), 10)
    gap = prober.gap(killed)
    print(f"in-place restart gap {gap:.2f} s (VIP holder now: amphora {pair.master()})")
    assert gap < 3.0

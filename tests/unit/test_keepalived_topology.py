"""What marks a topology transition (503 on listener changes), and what ends it."""

from __future__ import annotations

import dataclasses

import pytest

from amphora_agent.errors import Unavailable
from amphora_agent.keepalived.topology import TopologyTransition, VrrpState
from amphora_agent.settings import LiveSettings, Settings, Topology


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition]:
    """Live settings (SINGLE), a VRRP state the test sets, a clock, and the transition tracker."""
    live = LiveSettings(Settings())
    vrrp = {"configured": False, "running": False}
    clock = Clock()
    tracker = TopologyTransition(live, lambda: VrrpState(**vrrp), timeout=60, clock=clock)
    return live, vrrp, clock, tracker


def switch(live: LiveSettings, topology: Topology) -> None:
    """What PUT /1.0/config does: replace the live settings."""
    live.replace(dataclasses.replace(live.current, loadbalancer_topology=topology))


def test_boot_topology_never_blocks(
    world: tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition],
) -> None:
    """ACTIVE_STANDBY read at start, VRRP not set up yet (the normal create flow): no 503."""
    live = LiveSettings(Settings(loadbalancer_topology="ACTIVE_STANDBY"))
    tracker = TopologyTransition(live, lambda: VrrpState(False, False))
    tracker.check()
    switch(live, "ACTIVE_STANDBY")  # the controller pushes the same topology again
    tracker.check()
    assert tracker.status() == "OK"


def test_to_active_standby_lasts_until_keepalived_runs(
    world: tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition],
) -> None:
    """SINGLE -> ACTIVE_STANDBY: 503 until a VRRP config is stored and keepalived runs."""
    live, vrrp, _, tracker = world
    switch(live, "ACTIVE_STANDBY")
    with pytest.raises(Unavailable) as raised:
        tracker.check()
    assert raised.value.message == "Topology transition in progress"
    assert "SINGLE to ACTIVE_STANDBY" in str(raised.value.details)
    assert tracker.status() == "TRANSITIONING"
    vrrp["configured"] = True
    with pytest.raises(Unavailable):
        tracker.check()
    vrrp["running"] = True
    tracker.check()
    vrrp["running"] = False  # once complete, it stays complete
    tracker.check()


def test_to_single_lasts_until_keepalived_stops(
    world: tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition],
) -> None:
    """ACTIVE_STANDBY -> SINGLE with keepalived running: 503 until it is stopped."""
    live, vrrp, _, tracker = world
    vrrp.update(configured=True, running=True)
    switch(live, "ACTIVE_STANDBY")  # already in place: nothing to wait for
    tracker.check()
    switch(live, "SINGLE")
    with pytest.raises(Unavailable):
        tracker.check()
    vrrp["running"] = False
    tracker.check()


def test_switching_back_cancels(
    world: tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition],
) -> None:
    """A change back to the previous topology ends the transition."""
    live, _, _, tracker = world
    switch(live, "ACTIVE_STANDBY")
    with pytest.raises(Unavailable):  # the transition started
        tracker.check()
    assert tracker.status() == "TRANSITIONING"
    switch(live, "SINGLE")
    tracker.check()
    assert tracker.status() != "TRANSITIONING"


def test_transition_expires(world: tuple[LiveSettings, dict[str, bool], Clock, TopologyTransition]) -> None:
    """A transition the controller never completes ends after the timeout, so nothing stays locked."""
    live, _, clock, tracker = world
    switch(live, "ACTIVE_STANDBY")
    clock.now += 59
    with pytest.raises(Unavailable):
        tracker.check()
    clock.now += 2
    tracker.check()

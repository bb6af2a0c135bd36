"""The supervisor's back-off (a unit that keeps failing is retried after 1, 2, 4 ... s, capped) and
its report of load balancers that lost their config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from amphora_agent.errors import CommandFailed
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.supervisor import OrphanReport, Supervisor, Unit

LOST = "5eed0000-0000-4000-8000-0000000000ff"


class FailingUnit:
    """A unit that should run, does not, and fails to start until ``healthy`` is set."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.healthy = False
        self.now = 0.0

    def unit(self) -> Unit:
        """The unit as the supervisor sees it."""
        return Unit("haproxy for lb", lambda: True, lambda: self.healthy, self.start)

    def start(self) -> bool:
        """Record the attempt; fail."""
        self.attempts.append(self.now)
        raise CommandFailed("haproxy does not start", "Cannot raise FD limit")


def run_until(max_backoff: float, end: float, step: float = 0.25) -> list[float]:
    """Check every ``step`` seconds of a fake clock until ``end``; the times a start was tried."""
    fake = FailingUnit()
    supervisor = Supervisor([lambda: [fake.unit()]], max_backoff=max_backoff, clock=lambda: fake.now)
    while fake.now <= end:
        supervisor.check_once()
        fake.now += step
    return fake.attempts


@pytest.mark.parametrize(
    ("max_backoff", "end", "expected"),
    [
        (30.0, 0.0, [0.0]),
        (30.0, 7.0, [0.0, 1.0, 3.0, 7.0]),  # waits of 1, 2, 4 s
        (30.0, 63.0, [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0]),  # 8, 16, then capped at 30
        (4.0, 20.0, [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0]),  # a lower cap
    ],
)
def test_backoff_doubles_up_to_the_cap(max_backoff: float, end: float, expected: list[float]) -> None:
    """Each failed start doubles the wait before the next try, up to ``max_backoff``."""
    assert run_until(max_backoff, end) == expected


def test_backoff_resets_once_the_unit_runs() -> None:
    """A unit seen running forgets its back-off: its next failure is retried after 1 s again."""
    fake = FailingUnit()
    supervisor = Supervisor([lambda: [fake.unit()]], clock=lambda: fake.now)
    for now in (0.0, 1.0, 3.0):
        fake.now = now
        supervisor.check_once()
    fake.healthy, fake.now = True, 4.0
    supervisor.check_once()
    fake.healthy, fake.now = False, 10.0
    supervisor.check_once()
    fake.now = 11.0
    supervisor.check_once()
    assert fake.attempts == [0.0, 1.0, 3.0, 10.0, 11.0]


def test_a_unit_that_starts_is_reported() -> None:
    """A unit that was down and starts is named in the pass's result."""
    supervisor = Supervisor([lambda: [Unit("keepalived", lambda: True, lambda: False, lambda: True)]])
    assert supervisor.check_once() == ["keepalived"]


def test_markers_of_other_units_are_not_orphan_load_balancers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``vrrp/running`` (keepalived's marker) and a linked folder are no load balancer: no false ERROR;
    a real load balancer folder that lost its config is reported."""
    layout = Layout(tmp_path / "lib", tmp_path / "lib" / "certs")
    lbs = LoadBalancers(LiveSettings(Settings(base_path=layout.base)), layout)
    for marker in (layout.vrrp("running"), layout.lvs("x", "running")):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "running").write_bytes(b"")
    (layout.base / LOST).symlink_to(tmp_path / "elsewhere")
    assert lbs.orphans() == {}
    (layout.base / LOST).unlink()
    layout.desired_running(LOST).parent.mkdir()
    layout.desired_running(LOST).write_bytes(b"")
    with caplog.at_level(logging.ERROR):
        OrphanReport(lbs)()
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        f"the configuration of load balancer {LOST} was removed behind the agent's back"
    ]

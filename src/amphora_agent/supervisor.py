"""Keeps every unit that should run running: haproxy per load balancer, keepalived for VRRP and LVS.

Desired state lives on disk (the ``running`` markers), actual state in /proc; the supervisor closes
the gap after a crash, a kill or a reboot, with exponential back-off per unit, logging every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from starlette.concurrency import run_in_threadpool

from amphora_agent.errors import AgentError
from amphora_agent.loadbalancers import LoadBalancers

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One supervised process: whether it should run, whether it does, and how to start it."""

    name: str
    wants_running: Callable[[], bool]
    is_running: Callable[[], bool]
    ensure_running: Callable[[], bool]  # starts it unless busy or no longer wanted; True if it did


UnitSource = Callable[[], list[Unit]]


def haproxy_units(lbs: LoadBalancers) -> list[Unit]:
    """One unit per stored load balancer."""
    return [
        Unit(
            f"haproxy for {lb_id}",
            partial(lbs.wants_running, lb_id),
            partial(lbs.is_running, lb_id),
            partial(lbs.ensure_running, lb_id),
        )
        for lb_id in lbs.layout.lb_ids()
    ]


class Supervisor:
    """Desired vs. actual state of every unit, checked every ``interval`` seconds, sources in order."""

    def __init__(self, sources: Sequence[UnitSource], interval: float = 0.5, max_backoff: float = 30.0):
        self._sources = sources
        self.interval = interval
        self.max_backoff = max_backoff
        self._next_try: dict[str, float] = {}
        self._backoff: dict[str, float] = {}

    def check_once(self) -> list[str]:
        """Start what should run and does not; return the units it started."""
        started = []
        now = time.monotonic()
        for unit in (unit for source in self._sources for unit in source()):
            if not unit.wants_running() or unit.is_running():
                self._backoff.pop(unit.name, None)
                continue
            if now < self._next_try.get(unit.name, 0.0):
                continue
            try:
                if unit.ensure_running():
                    LOG.warning("%s was not running: started it again", unit.name)
                    started.append(unit.name)
            except AgentError as exc:
                delay = min(self._backoff.get(unit.name, 0.5) * 2, self.max_backoff)
                self._backoff[unit.name] = delay
                self._next_try[unit.name] = now + delay
                LOG.error("%s does not start (next try in %.0f s): %s", unit.name, delay, exc.details or exc)
        return started

    async def run(self, stop: asyncio.Event) -> None:
        """Check until ``stop`` is set."""
        while not stop.is_set():
            try:
                await run_in_threadpool(self.check_once)
            except Exception:  # the loop must outlive any single failure
                LOG.exception("supervisor pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

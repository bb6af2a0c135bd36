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

from amphora_agent.errors import AgentError
from amphora_agent.loadbalancers.service import LoadBalancers

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


class OrphanReport:
    """A unit source that starts nothing: it says (once each) which load balancers lost their config
    behind the agent's back, and when that is over. They are not in /listeners, /details or the
    heartbeat; deleting them (or uploading their config again) puts things right."""

    def __init__(self, lbs: LoadBalancers, every: float = 2.0) -> None:
        self._lbs = lbs
        self.every = every
        self._next = 0.0
        self._told: dict[str, str] = {}

    def __call__(self) -> list[Unit]:
        """Check at most every ``every`` seconds (one /proc scan); never a unit to start."""
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.every
        try:
            current = self._lbs.orphans()
        except OSError as exc:  # an unreadable base path: say so, and try again next time
            LOG.warning("could not look for load balancers without configuration: %s", exc)
            return []
        for lb_id, what in current.items():
            if self._told.get(lb_id) != what:
                LOG.error(
                    "the configuration of load balancer %s was removed behind the agent's back: %s",
                    lb_id,
                    what,
                )
        for lb_id in self._told.keys() - current.keys():
            LOG.warning("load balancer %s without configuration: resolved", lb_id)
        self._told = current
        return []


class Supervisor:
    """Desired vs. actual state of every unit, checked every ``interval`` seconds, sources in order."""

    def __init__(
        self,
        sources: Sequence[UnitSource],
        interval: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sources = sources
        self._clock = clock
        self.interval = interval
        self.max_backoff = max_backoff
        self._next_try: dict[str, float] = {}
        self._backoff: dict[str, float] = {}

    def check_once(self) -> list[str]:
        """Start what should run and does not; return the units it started."""
        started = []
        now = self._clock()
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
                await asyncio.to_thread(self.check_once)
            except Exception:  # the loop must outlive any single failure
                LOG.exception("supervisor pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

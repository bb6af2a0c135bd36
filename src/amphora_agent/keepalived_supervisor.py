"""Keeps keepalived running where it should: VRRP and every LVS listener, after a crash, a kill or a reboot.

The sibling of the haproxy supervisor, with the same rules: desired state on disk (the ``running``
markers), actual state in /proc, exponential back-off per unit, every restart logged. LVS listeners
are left alone while the kernel has no IPVS (they cannot run; their status says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from starlette.concurrency import run_in_threadpool

from amphora_agent.errors import AgentError
from amphora_agent.keepalived import Vrrp
from amphora_agent.lvs import LvsListeners
from amphora_agent.system import keepalived as ka

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One supervised keepalived."""

    name: str
    wants_running: Callable[[], bool]
    is_running: Callable[[], bool]
    ensure_running: Callable[[], bool]


class KeepalivedSupervisor:
    """Desired vs. actual keepalived state, checked every ``interval`` seconds."""

    def __init__(self, vrrp: Vrrp, lvs: LvsListeners, interval: float = 0.5, max_backoff: float = 30.0):
        self._vrrp = vrrp
        self._lvs = lvs
        self.interval = interval
        self.max_backoff = max_backoff
        self._next_try: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._told_no_ipvs = False

    def units(self) -> list[Unit]:
        """The VRRP keepalived and, where IPVS exists, every LVS listener's."""
        vrrp = self._vrrp
        units = [Unit("keepalived (VRRP)", vrrp.wants_running, vrrp.is_running, vrrp.ensure_running)]
        listener_ids = self._lvs.paths.lvs_ids()
        reason = ka.ipvs_unavailable() if listener_ids else None
        if reason is not None:
            if not self._told_no_ipvs and any(self._lvs.wants_running(i) for i in listener_ids):
                LOG.error("LVS listeners cannot run: %s", reason)
                self._told_no_ipvs = True
            return units
        for listener_id in listener_ids:
            units.append(
                Unit(
                    f"keepalived for LVS listener {listener_id}",
                    partial(self._lvs.wants_running, listener_id),
                    partial(self._lvs.is_running, listener_id),
                    partial(self._lvs.ensure_running, listener_id),
                )
            )
        return units

    def check_once(self) -> list[str]:
        """Start what should run and does not; return the units it started."""
        started = []
        now = time.monotonic()
        for unit in self.units():
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
                LOG.exception("keepalived supervisor pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

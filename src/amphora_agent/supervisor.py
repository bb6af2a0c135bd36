"""Keeps every load balancer that should run running: after a crash, a kill or a reboot.

Desired state lives on disk (the ``running`` marker), actual state in /proc; the supervisor closes the
gap with exponential back-off per load balancer, logging every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.concurrency import run_in_threadpool

from amphora_agent.errors import AgentError
from amphora_agent.loadbalancers import LoadBalancers

LOG = logging.getLogger(__name__)


class Supervisor:
    """Desired vs. actual haproxy state, checked every ``interval`` seconds."""

    def __init__(self, lbs: LoadBalancers, interval: float = 0.5, max_backoff: float = 30.0):
        self._lbs = lbs
        self.interval = interval
        self.max_backoff = max_backoff
        self._next_try: dict[str, float] = {}
        self._backoff: dict[str, float] = {}

    def check_once(self) -> list[str]:
        """Start what should run and does not; return the load balancers it started."""
        started = []
        now = time.monotonic()
        for lb_id in self._lbs.layout.lb_ids():
            if not self._lbs.wants_running(lb_id) or self._lbs.is_running(lb_id):
                self._backoff.pop(lb_id, None)
                continue
            if now < self._next_try.get(lb_id, 0.0):
                continue
            try:
                if self._lbs.ensure_running(lb_id):
                    LOG.warning("haproxy for %s was not running: started it again", lb_id)
                    started.append(lb_id)
            except AgentError as exc:
                delay = min(self._backoff.get(lb_id, 0.5) * 2, self.max_backoff)
                self._backoff[lb_id] = delay
                self._next_try[lb_id] = now + delay
                LOG.error(
                    "haproxy for %s does not start (next try in %.0f s): %s",
                    lb_id,
                    delay,
                    exc.details or exc.message,
                )
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

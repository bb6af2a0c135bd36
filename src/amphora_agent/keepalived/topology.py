"""Topology transitions: when listener changes get 503 "Topology transition in progress".

What marks a transition: ``PUT /1.0/config`` changes ``[controller_worker] loadbalancer_topology``
while the VRRP side does not match the new topology yet.

- SINGLE -> ACTIVE_STANDBY: it lasts until keepalived runs with a stored VRRP config (the controller's
  ``PUT /1.0/vrrp/upload`` then ``PUT /1.0/vrrp/start``); before that, a listener change would be
  served by an amphora that is not yet in its VRRP pair (and the check chain is not tracked).
- ACTIVE_STANDBY -> SINGLE: it lasts until keepalived is stopped (``PUT /1.0/vrrp/stop``); before
  that, keepalived may still move the VIP away from a listener the controller thinks is standalone.

A change back to the previous topology cancels it. No transition starts when the amphora is already
in the target state, so the boot topology (read from the config drive) never blocks anything, nor do
the controller's normal create flows. It is bounded: after ``timeout`` seconds it expires with a
warning, so a controller that never completes it cannot lock the amphora. It lives in memory: an agent
restart ends it (the restarted agent takes the file's topology as the boot topology).
While it lasts, the listener-changing routes answer 503: haproxy config upload, UDP listener upload,
``PUT /1.0/loadbalancer/<id>/<action>`` and ``DELETE /1.0/listeners/<id>``. VRRP, plug, interface,
certificate and read-only routes stay open (the first ones are how the transition completes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from amphora_agent.errors import Unavailable
from amphora_agent.settings import ACTIVE_STANDBY, LiveSettings, Settings

LOG = logging.getLogger(__name__)
DEFAULT_TIMEOUT = 300.0
MESSAGE = "Topology transition in progress"


@dataclass(frozen=True)
class VrrpState:
    """What the transition waits for."""

    configured: bool
    running: bool


@dataclass(frozen=True)
class Transition:
    """One topology change that is not complete yet."""

    source: str
    target: str
    started: float

    def waiting_for(self) -> str:
        """What completes it, in the controller's terms."""
        if self.target == ACTIVE_STANDBY:
            return (
                "keepalived to run with an uploaded VRRP config (PUT /1.0/vrrp/upload, PUT /1.0/vrrp/start)"
            )
        return "keepalived to be stopped (PUT /1.0/vrrp/stop)"


class TopologyTransition:
    """Tracks ``loadbalancer_topology`` changes and answers whether listener changes must wait."""

    def __init__(
        self,
        live: LiveSettings,
        vrrp_state: Callable[[], VrrpState],
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vrrp_state = vrrp_state
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._topology = live.current.loadbalancer_topology
        self._current: Transition | None = None
        live.subscribe(self.settings_changed)

    def settled(self, target: str) -> bool:
        """Whether the VRRP side already matches ``target``."""
        state = self._vrrp_state()
        return state.configured and state.running if target == ACTIVE_STANDBY else not state.running

    def settings_changed(self, settings: Settings) -> None:
        """A new agent config is in force: start (or cancel) a transition."""
        new = settings.loadbalancer_topology
        with self._lock:
            old, self._topology = self._topology, new
            if new == old:
                return
            if self._current is not None and self._current.source == new:
                LOG.info("topology back to %s: transition cancelled", new)
                self._current = None
            elif self.settled(new):
                LOG.info("topology %s -> %s: already in place", old, new)
                self._current = None
            else:
                self._current = Transition(old, new, self._clock())
                LOG.info("topology transition %s -> %s started", old, new)

    def current(self) -> Transition | None:
        """The transition in progress, or None (completed and expired ones are cleared here)."""
        with self._lock:
            transition = self._current
            if transition is None:
                return None
            if self.settled(transition.target):
                LOG.info("topology transition to %s complete", transition.target)
                self._current = None
            elif self._clock() - transition.started > self._timeout:
                LOG.warning(
                    "topology transition to %s expired after %.0f s, still waiting for %s",
                    transition.target,
                    self._timeout,
                    transition.waiting_for(),
                )
                self._current = None
            return self._current

    def check(self) -> None:
        """Raise 503 while a transition is in progress."""
        transition = self.current()
        if transition is None:
            return
        age = self._clock() - transition.started
        raise Unavailable(
            MESSAGE,
            f"loadbalancer_topology changed from {transition.source} to {transition.target} "
            f"{age:.0f} s ago; listener changes resume once it completes: waiting for "
            f"{transition.waiting_for()}",
        )

    def status(self) -> str:
        """``topology_status`` for /1.0/details."""
        return "OK" if self.current() is None else "TRANSITIONING"

"""Routes that name either a load balancer (haproxy) or an LVS listener, and the keepalived services.

``PUT /1.0/loadbalancer/<id>/<action>`` and ``DELETE /1.0/listeners/<id>`` choose the backend as the
existing agent does (reference 5.5): haproxy when ``<base>/<id>/haproxy.cfg`` exists, else LVS when
``<base>/lvs/octavia-keepalivedlvs-<id>.conf`` exists, else haproxy (404 for actions, 200 for
deletes). Listener-changing calls answer 503 during a topology transition, and every change
refreshes the VRRP check chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amphora_agent import validation
from amphora_agent.keepalived.lvs import LvsListeners, LvsListenerStatus
from amphora_agent.keepalived.topology import TopologyTransition, VrrpState
from amphora_agent.keepalived.vrrp import CheckScripts, Vrrp
from amphora_agent.loadbalancers.service import ListenerStatus, LoadBalancers, LockTable
from amphora_agent.settings import LiveSettings
from amphora_agent.system.uploads import Destination, Upload


class ObjectActions:
    """The haproxy service's ``put_config``/``act``/``delete``/``listeners``, extended to LVS."""

    def __init__(
        self,
        lbs: LoadBalancers,
        lvs: LvsListeners,
        scripts: CheckScripts,
        transition: TopologyTransition,
    ) -> None:
        self._lbs = lbs
        self._lvs = lvs
        self._scripts = scripts
        self._transition = transition

    def config_target(self, amphora_id: str, lb_id: str) -> Destination:
        """Where an uploaded haproxy config goes; the ids are checked before any byte is received."""
        validation.object_id(amphora_id, "amphora")
        return self._lbs.config_target(lb_id)

    def udp_listener_target(self, amphora_id: str, listener_id: str) -> Destination:
        """Where an uploaded LVS listener config goes; the ids are checked before any byte is received."""
        validation.object_id(amphora_id, "amphora")
        return self._lvs.config_target(listener_id)

    def put_config(self, amphora_id: str, lb_id: str, upload: Upload) -> None:
        """Store a haproxy config (503 during a topology transition)."""
        validation.object_id(amphora_id, "amphora")
        validation.object_id(lb_id, "loadbalancer")
        self._transition.check()
        self._lbs.put_config(amphora_id, lb_id, upload)

    def put_udp_listener(self, amphora_id: str, listener_id: str, upload: Upload) -> None:
        """Store an LVS listener config (503 during a topology transition)."""
        validation.object_id(amphora_id, "amphora")
        validation.object_id(listener_id, "listener")
        self._transition.check()
        self._lvs.put_config(amphora_id, listener_id, upload)

    def act(self, object_id: str, action: str) -> str:
        """start, stop or reload a load balancer's haproxy or an LVS listener's keepalived."""
        action = validation.action(action)  # an unknown action is a 400 before anything else
        validation.object_id(object_id, "loadbalancer")
        self._transition.check()
        if self._lbs.exists(object_id) or not self._lvs.exists(object_id):
            if action == "stop":
                self._scripts.refresh(exclude=object_id)
            try:
                return self._lbs.act(object_id, action)
            finally:
                self._scripts.refresh()
        return self._lvs.act(object_id, action)

    def delete(self, object_id: str) -> None:
        """Delete a load balancer or an LVS listener (an unknown id is fine)."""
        validation.object_id(object_id, "listener")
        self._transition.check()
        if self._lbs.exists(object_id) or not self._lvs.exists(object_id):
            self._scripts.refresh(exclude=object_id)
            try:
                self._lbs.delete(object_id)
            finally:
                self._scripts.refresh()
        else:
            self._lvs.delete(object_id)

    def listeners(self) -> list[ListenerStatus | LvsListenerStatus]:
        """haproxy listeners, then LVS listeners."""
        return [*self._lbs.listeners(), *self._lvs.listeners()]


@dataclass(frozen=True)
class KeepalivedServices:
    """VRRP, LVS listeners, their check chain, the topology transition and the dispatching facade."""

    vrrp: Vrrp
    lvs: LvsListeners
    scripts: CheckScripts
    transition: TopologyTransition
    objects: ObjectActions

    def details(self, body: dict[str, Any]) -> None:
        """Add LVS listeners, their process count and errors, and the topology status to /details."""
        rows = self.lvs.listeners()
        body["listeners"] = sorted({*body.get("listeners", []), *(row.uuid for row in rows)})
        body["lvs_listener_process_count"] = self.lvs.running_count()
        body["lvs_listener_errors"] = {row.uuid: row.reason for row in rows if row.status == "ERROR"}
        body["topology_status"] = self.transition.status()


def build_keepalived(live: LiveSettings, lbs: LoadBalancers, locks: LockTable) -> KeepalivedServices:
    """Wire the keepalived services around the haproxy service."""
    paths = lbs.layout
    scripts = CheckScripts(live, paths, lbs)
    vrrp = Vrrp(live, paths, scripts)
    lvs = LvsListeners(live, paths, scripts, locks)
    transition = TopologyTransition(live, lambda: VrrpState(vrrp.configured(), vrrp.is_running()))
    return KeepalivedServices(vrrp, lvs, scripts, transition, ObjectActions(lbs, lvs, scripts, transition))

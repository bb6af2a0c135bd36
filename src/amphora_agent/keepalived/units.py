"""The supervisor's keepalived units: VRRP and every LVS listener.

LVS listeners are left alone while the kernel has no IPVS (they cannot run; their status says why).
"""

from __future__ import annotations

import logging
from functools import partial

from amphora_agent.keepalived.lvs import LvsListeners
from amphora_agent.keepalived.vrrp import Vrrp
from amphora_agent.supervisor import Unit
from amphora_agent.system import keepalived

LOG = logging.getLogger(__name__)


class KeepalivedUnits:
    """The supervisor's keepalived units; says once (not every pass) that LVS cannot run."""

    def __init__(self, vrrp: Vrrp, lvs: LvsListeners) -> None:
        self._vrrp = vrrp
        self._lvs = lvs
        self._told_no_ipvs = False

    def __call__(self) -> list[Unit]:
        """The VRRP keepalived and, where IPVS exists, every LVS listener's."""
        vrrp = self._vrrp
        units = [Unit("keepalived (VRRP)", vrrp.wants_running, vrrp.is_running, vrrp.ensure_running)]
        listener_ids = self._lvs.paths.lvs_ids()
        reason = keepalived.ipvs_unavailable() if listener_ids else None
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

"""The composition root: ``wire(settings) -> Agent`` builds every service once; ``Agent.start_up``
restores what a reboot or a crash left. The daemon (``cli.serve``) and the API tests use the same
``wire``, so the tests run the app the amphora runs: networking and keepalived included.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from functools import partial

from amphora_agent import tls
from amphora_agent.agentconfig import AgentConfig
from amphora_agent.api import Services
from amphora_agent.health.lvs_stats import LvsStats
from amphora_agent.health.sender import HeartbeatSender
from amphora_agent.info import HostInfo
from amphora_agent.keepalived.objects import KeepalivedServices, build_keepalived
from amphora_agent.keepalived.units import KeepalivedUnits
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.certificates import ServerCertificate, TenantCertificates
from amphora_agent.loadbalancers.service import LoadBalancers, LockTable
from amphora_agent.metrics.endpoint import MetricsEndpoint
from amphora_agent.metrics.scrape import Scraper
from amphora_agent.network.service import Networking
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.supervisor import OrphanReport, Supervisor, UnitSource, haproxy_units
from amphora_agent.system import files, netns
from amphora_agent.system.keepalived import ipvs_unavailable

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agent:
    """Everything one agent runs: the services the API calls, the supervisor, the heartbeat and the
    Prometheus endpoint of PROMETHEUS listeners (``metrics``)."""

    live: LiveSettings
    layout: Layout
    services: Services
    supervisor: Supervisor
    heartbeat: HeartbeatSender
    metrics: MetricsEndpoint

    @property
    def keepalived(self) -> KeepalivedServices:
        """VRRP, LVS and the topology transition."""
        return self.services.keepalived

    def start_up(self) -> None:
        """Before the first request: folders, crash leftovers, NICs, then every unit that should run."""
        settings = self.live.current
        raise_fd_limit()
        netns.ensure(settings.network_namespace)
        drop_crash_leftovers(self.layout, settings)
        self.services.lbs.prepare()
        restored = self.services.network.recover()  # NICs before any haproxy binds to them
        if restored:
            LOG.info("restored interface(s) %s in %s", ", ".join(restored), settings.network_namespace)
        self.keepalived.scripts.refresh()  # the check chain names this agent's checker: keep it current
        restarted = self.supervisor.check_once()  # reboot recovery before the first request
        if restarted:
            LOG.info("started %s", ", ".join(restarted))


def wire(settings: Settings) -> Agent:
    """Settings -> adapters -> services; nothing is started or changed on disk here."""
    live = LiveSettings(settings)
    layout = Layout.from_settings(settings)
    locks = LockTable()
    lbs = LoadBalancers(live, layout, locks)
    keepalived = build_keepalived(live, lbs, locks)
    context = tls.server_context(
        settings.agent_server_cert, settings.agent_server_ca, settings.agent_tls_protocol
    )
    services = Services(
        lbs=lbs,
        certs=TenantCertificates(layout, locks),
        server_cert=ServerCertificate(settings.agent_server_cert, context),
        agent_config=AgentConfig(live),
        info=HostInfo(live, lbs, keepalived.details),
        network=Networking(live, layout),
        keepalived=keepalived,
        tls_context=context,
    )
    # haproxy first, then VRRP and LVS, so keepalived's check chain passes at once
    units: list[UnitSource] = [
        partial(haproxy_units, lbs),
        KeepalivedUnits(keepalived.vrrp, keepalived.lvs),
        OrphanReport(lbs),
    ]
    lvs = keepalived.lvs
    lvs_stats = LvsStats(lvs.paths, lvs.is_running, lambda: lvs.netns, ipvs_unavailable)
    heartbeat = HeartbeatSender(live, layout, lbs.is_running, lvs_stats)
    metrics = MetricsEndpoint(lambda: live.current.network_namespace, Scraper(lvs_stats.snapshot))
    return Agent(live, layout, services, Supervisor(units), heartbeat, metrics)


def raise_fd_limit() -> None:
    """Children (haproxy) inherit the soft open-file limit: raise it to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def drop_crash_leftovers(layout: Layout, settings: Settings) -> None:
    """Remove the temp files an agent killed mid-write left (the files they were for are intact)."""
    removed = files.clean_stale_temps(layout.base, recursive=True)
    removed += files.clean_stale_temps(layout.certs, recursive=True)
    for path in (settings.config_file, settings.agent_server_cert):
        if path is not None:  # folders shared with others: only the temps of the agent's own file
            removed += files.clean_stale_temps(path.parent, name=path.name)
    removed += files.clean_stale_temps(layout.interfaces, name="*.json")
    if removed:
        LOG.warning("removed %d temp file(s) left by an interrupted write: %s", len(removed), removed[:5])

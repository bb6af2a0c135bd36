"""UDP and SCTP listeners in the heartbeat and the Prometheus metrics: what IPVS says about each.

The pure half reads ``ipvsadm -Ln``, ``ipvsadm -Ln --stats --exact`` and ``/proc/net/ip_vs`` into
tables and turns a listener's config and those tables into samples (reference 10.3). The other half
reads them inside the haproxy namespace into an ``LvsSnapshot``, which the heartbeat (``sample_of``)
and ``metrics.l4`` both use. Every VIP of a listener counts (the existing agent reads
only the first of each family): the statistics of all its virtual services are summed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from amphora_agent.errors import CommandFailed
from amphora_agent.health.samples import ListenerSample, PoolSample, Sample
from amphora_agent.keepalived import config_text
from amphora_agent.layout import Layout
from amphora_agent.system import netns, proc

LOG = logging.getLogger(__name__)
PROTOCOLS = ("TCP", "UDP", "SCTP")
IPVSADM_TIMEOUT = 2.0
IP_VS_TABLE = "/proc/thread-self/net/ip_vs"  # this thread's namespace (/proc/net follows the process)

Endpoint = tuple[str, str, int]  # protocol, compressed address, port


class IpvsError(ValueError):
    """A table that is not what ipvsadm or the kernel prints."""


@dataclass(frozen=True)
class Real:
    """A real server (member) row: its address and the values under the column names."""

    address: str
    port: int
    values: dict[str, str]


@dataclass(frozen=True)
class Service:
    """A virtual service row with its real servers."""

    values: dict[str, str]
    reals: list[Real] = field(default_factory=list)


IpvsTable = dict[Endpoint, Service]


# -- pure: tables --------------------------------------------------------------------------------
def _address(text: str, port_base: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise IpvsError(f"not an address:port: {text!r}")
    try:
        if host.startswith("["):
            address = ipaddress.ip_address(host.strip("[]"))
        elif port_base == 16:  # the kernel prints IPv4 as 8 hex digits
            address = ipaddress.IPv4Address(int(host, 16))
        else:
            address = ipaddress.ip_address(host)
        return address.compressed, int(port, port_base)
    except ValueError as exc:
        raise IpvsError(f"not an address:port: {text!r}") from exc


def _parse(text: str, port_base: int) -> IpvsTable:
    table: IpvsTable = {}
    service_columns: list[str] = []
    real_columns: list[str] | None = None
    current: Service | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or line.startswith("IP Virtual Server version"):
            continue
        if words[:2] == ["Prot", "LocalAddress:Port"]:
            service_columns = words[2:]
        elif words[:2] == ["->", "RemoteAddress:Port"]:
            real_columns = words[2:] or None  # ``--stats``: the service's columns
        elif words[0] == "->":
            if current is not None and len(words) >= 2:
                address, port = _address(words[1], port_base)
                names = real_columns or service_columns
                current.reals.append(Real(address, port, dict(zip(names, words[2:], strict=False))))
        elif words[0] in PROTOCOLS and len(words) >= 2:
            address, port = _address(words[1], port_base)
            current = Service(dict(zip(service_columns, words[2:], strict=False)))
            table[(words[0], address, port)] = current
        elif words[0] == "FWM":
            current = None  # firewall-mark services are not the controller's
        else:
            raise IpvsError(f"unexpected line: {line.strip()[:80]!r}")
    return table


def parse_ipvsadm(text: str) -> IpvsTable:
    """``ipvsadm -Ln`` or ``ipvsadm -Ln --stats --exact``: services by (protocol, address, port)."""
    return _parse(text, 10)


def parse_ip_vs(text: str) -> IpvsTable:
    """``/proc/net/ip_vs`` (hex addresses and ports): services by (protocol, address, port)."""
    return _parse(text, 16)


# -- pure: samples -------------------------------------------------------------------------------
def endpoints(config: config_text.LvsConfig) -> list[Endpoint]:
    """Every virtual service of a listener: each protocol at each VIP."""
    return [(protocol, address, port) for protocol in config.protocols for address, port in config.vips]


def _number(values: Mapping[str, str], name: str) -> int:
    try:
        return int(values.get(name, "0"))
    except ValueError as exc:
        raise IpvsError(f"{name} is not an integer: {values.get(name)!r}") from exc


def listener_sample(config: config_text.LvsConfig, listing: IpvsTable, stats: IpvsTable) -> ListenerSample:
    """OPEN with the summed counters of the listener's services; zeros while IPVS does not list it."""
    listed = [listing[e] for e in endpoints(config) if e in listing]
    counted = [stats[e] for e in endpoints(config) if e in stats]
    if not listed or not counted:
        return ListenerSample("OPEN")
    return ListenerSample(
        "OPEN",
        scur=sum(_number(real.values, "ActiveConn") for service in listed for real in service.reals),
        stot=sum(_number(service.values, "Conns") for service in counted),
        bin=sum(_number(service.values, "InBytes") for service in counted),
        bout=sum(_number(service.values, "OutBytes") for service in counted),
    )


def _kernel_weights(config: config_text.LvsConfig, table: IpvsTable) -> dict[tuple[str, int], int]:
    weights: dict[tuple[str, int], int] = {}
    for endpoint in endpoints(config):
        for real in table[endpoint].reals if endpoint in table else []:
            key = (real.address, real.port)
            weights[key] = max(weights.get(key, 0), _number(real.values, "Weight"))
    return weights


def pool_sample(config: config_text.LvsConfig, table: IpvsTable, restarting: bool) -> PoolSample | None:
    """The pool and member statuses from the kernel's table; None when the config has no enabled pool.

    A member the kernel does not list is DOWN (RESTARTING while a new config waits for its
    restart); weight 0 is DRAIN; a listed member is UP, or ``no check`` without a health monitor.
    """
    if config.pool_id is None:
        return None
    checked = config.health_monitor
    absent = "RESTARTING" if restarting else "DOWN"
    weights = _kernel_weights(config, table)
    members: dict[str, str] = {}
    for member in config.members:
        if member.member_id is None:
            continue
        weight = weights.get((member.address or "", member.port or 0))
        if not member.enabled:
            members[member.member_id] = "MAINT"
        elif not weights:
            members[member.member_id] = absent if checked else "no check"
        elif weight is None:
            members[member.member_id] = absent
        elif weight == 0:
            members[member.member_id] = "DRAIN"
        else:
            members[member.member_id] = "UP" if checked else "no check"
    down = bool(config.members) and not weights and checked
    return PoolSample("DOWN" if down else "UP", members)


# -- reading IPVS inside the namespace -----------------------------------------------------------
def ipvsadm(namespace: str, stats: bool) -> str:
    """``ipvsadm -Ln`` (with ``--stats --exact``: integers only) inside ``namespace``."""
    argv = ["ipvsadm", "-Ln", *(["--stats", "--exact"] if stats else [])]
    return proc.run(argv, netns=namespace, timeout=IPVSADM_TIMEOUT, failure="ipvsadm failed")


def ip_vs_table(namespace: str) -> str:
    """The kernel's IPVS table of ``namespace``."""
    return netns.call_in(namespace, lambda: Path(IP_VS_TABLE).read_text())


@dataclass(frozen=True)
class LvsSnapshot:
    """What the kernel said about the running, enabled LVS listeners at one moment.

    The heartbeat (``sample_of``) and the Prometheus endpoint (``metrics.l4``) read the same snapshot.
    """

    open_ids: tuple[str, ...] = ()  # running, enabled listeners, in id order: all are OPEN
    configs: dict[str, config_text.LvsConfig] = field(default_factory=dict)  # those with a virtual server
    kernel_read: bool = False  # whether IPVS was asked (a listener with a virtual server, IPVS present)
    listing: IpvsTable | None = None  # ``ipvsadm -Ln``; None when not read or unreadable
    stats: IpvsTable | None = None  # ``ipvsadm -Ln --stats --exact``
    table: IpvsTable | None = None  # ``/proc/net/ip_vs``
    restarting: frozenset[str] = frozenset()  # listeners whose stored config waits for a restart

    @property
    def counted(self) -> bool:
        """Whether the counters could be read."""
        return self.listing is not None and self.stats is not None


def sample_of(snapshot: LvsSnapshot) -> Sample:
    """The heartbeat's view: OPEN listeners with counters where IPVS lists them, pools from the kernel."""
    listeners = {listener_id: ListenerSample("OPEN") for listener_id in snapshot.open_ids}
    if not snapshot.kernel_read:
        return Sample(listeners)
    pools: dict[str, PoolSample] = {}
    for listener_id, config in snapshot.configs.items():
        if snapshot.listing is not None and snapshot.stats is not None:
            listeners[listener_id] = listener_sample(config, snapshot.listing, snapshot.stats)
        else:
            listeners[listener_id] = ListenerSample("OPEN", counted=False)
        restarting = listener_id in snapshot.restarting
        pool = pool_sample(config, snapshot.table, restarting) if snapshot.table is not None else None
        if pool is not None and config.pool_id is not None:
            pools[config.pool_id] = pool
    return Sample(listeners, pools)


class LvsStats:
    """The LVS source: running, enabled LVS listeners with what IPVS says about them."""

    def __init__(
        self,
        paths: Layout,
        is_running: Callable[[str], bool],
        namespace: Callable[[], str],
        ipvs_unavailable: Callable[[], str | None],
        run_ipvsadm: Callable[[str, bool], str] = ipvsadm,
        read_table: Callable[[str], str] = ip_vs_table,
    ) -> None:
        self._paths = paths
        self._is_running = is_running
        self._namespace = namespace
        self._ipvs_unavailable = ipvs_unavailable
        self._ipvsadm = run_ipvsadm
        self._read_table = read_table
        self._said_no_ipvs = False

    def __call__(self) -> Sample:
        """Every running, enabled LVS listener (OPEN), with counters and pools where IPVS lists them."""
        return sample_of(self.snapshot())

    def snapshot(self) -> LvsSnapshot:
        """Read the stored configs and, when a listener has a virtual server, the kernel's tables."""
        ids = self._paths.lvs_ids()
        no_ipvs = self._note_ipvs() if ids else None
        open_ids: list[str] = []
        configs: dict[str, config_text.LvsConfig] = {}
        for listener_id in ids:
            config = self._config(listener_id)
            if config is None or config.listener_disabled or not self._is_running(listener_id):
                continue
            open_ids.append(listener_id)
            if config.vips and config.has_virtual_server:
                configs[listener_id] = config
        if not configs or no_ipvs:
            return LvsSnapshot(tuple(open_ids), configs)
        namespace = self._namespace()
        listing = _read(lambda: parse_ipvsadm(self._ipvsadm(namespace, False)), "ipvsadm -Ln")
        stats = None
        if listing is not None:
            stats = _read(lambda: parse_ipvsadm(self._ipvsadm(namespace, True)), "ipvsadm -Ln --stats")
        table = _read(lambda: parse_ip_vs(self._read_table(namespace)), "/proc/net/ip_vs")
        restarting = frozenset(listener_id for listener_id in configs if self._restarting(listener_id))
        return LvsSnapshot(tuple(open_ids), configs, True, listing, stats, table, restarting)

    def _note_ipvs(self) -> str | None:
        """Why IPVS cannot be read, said once (and again after it came back and went away)."""
        reason = self._ipvs_unavailable()
        if reason and not self._said_no_ipvs:
            LOG.warning("%s; heartbeats list no UDP or SCTP listener while keepalived cannot run", reason)
        self._said_no_ipvs = bool(reason)
        return reason

    def _config(self, listener_id: str) -> config_text.LvsConfig | None:
        try:
            return config_text.parse_lvs(self._paths.lvs(listener_id).read_text())
        except (OSError, ValueError) as exc:  # removed meanwhile, or not parsable
            LOG.debug("LVS listener %s skipped this time: %s", listener_id, exc)
            return None

    def _restarting(self, listener_id: str) -> bool:
        """Whether the stored config is newer than the running checker (a restart is pending)."""
        try:
            config = os.stat(self._paths.lvs(listener_id)).st_mtime
            return config > os.stat(self._paths.lvs(listener_id, "check.pid")).st_mtime
        except OSError:
            return False


def _read(read: Callable[[], IpvsTable], what: str) -> IpvsTable | None:
    """A parsed table, or None (logged) when it cannot be read or parsed."""
    try:
        return read()
    except (OSError, CommandFailed, IpvsError) as exc:
        details = str(getattr(exc, "details", None) or exc).strip()
        LOG.warning("no LVS figures from %s this time: %s", what, details[:300])
        return None

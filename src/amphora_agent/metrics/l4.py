"""UDP and SCTP (LVS) listeners, pools and members as ``octavia_*`` families (pure), from IPVS's tables.

The existing proxy reports nothing for them. The agent reads the same snapshot the heartbeat reads
(``health.lvs_stats``: ``ipvsadm -Ln``, ``ipvsadm -Ln --stats --exact``, ``/proc/net/ip_vs``) and
writes the haproxy families whose meaning carries over, with the same label keys, plus packet
counters (IPVS counts packets; haproxy does not). A pool is labelled ``<pool id>:<listener id>``,
as haproxy's backends are, so a dashboard's pool variable holds both kinds. Figures IPVS cannot give
now are left out, never written as zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from amphora_agent.health.lvs_stats import IpvsTable, LvsSnapshot, Real, endpoints, pool_sample
from amphora_agent.keepalived.config_text import LvsConfig, RealServer
from amphora_agent.metrics.exposition import Family, sample_line

LISTENER_STATES = ("DOWN", "UP")
POOL_STATES = ("DOWN", "UP")
MEMBER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")  # haproxy's server states
# the heartbeat's member statuses -> haproxy's state names
MEMBER_STATE = {
    "UP": "UP",
    "no check": "UP",
    "DOWN": "DOWN",
    "RESTARTING": "DOWN",
    "DRAIN": "DRAIN",
    "MAINT": "MAINT",
}

# ipvsadm --stats columns -> the family suffix they feed
COUNTERS = (
    ("Conns", "sessions_total"),
    ("InBytes", "bytes_in_total"),
    ("OutBytes", "bytes_out_total"),
    ("InPkts", "packets_in_total"),
    ("OutPkts", "packets_out_total"),
)

# (suffix, type, HELP): the HELP text is used when haproxy's output has no family of that name
FAMILIES = (
    ("status", "gauge", "Current status of the {kind}."),
    ("current_sessions", "gauge", "Current number of active sessions (IPVS: connection entries)."),
    ("sessions_total", "counter", "Total number of sessions (IPVS: connections scheduled)."),
    ("connections_total", "counter", "Total number of connections (IPVS: connections scheduled)."),
    ("bytes_in_total", "counter", "Total number of request bytes."),
    ("bytes_out_total", "counter", "Total number of response bytes."),
    ("packets_in_total", "counter", "Total number of packets received from clients (IPVS)."),
    ("packets_out_total", "counter", "Total number of packets sent to clients (IPVS)."),
    ("active_members", "gauge", "Current number of active members."),
    ("weight", "gauge", "Member weight."),
)
BY_SUFFIX = {suffix: (kind, text) for suffix, kind, text in FAMILIES}
COUNTED = ("sessions_total", "bytes_in_total", "bytes_out_total", "packets_in_total", "packets_out_total")
# What each kind of object gets (docs/metrics-families.md is generated from it; a test checks it).
WRITTEN = {
    "listener": ("status", "current_sessions", "connections_total", *COUNTED),
    "pool": ("status", "active_members", "current_sessions", *COUNTED),
    "member": ("status", "current_sessions", "weight", *COUNTED),
}
PREFIXES = {"listener": "octavia_listener_", "pool": "octavia_pool_", "member": "octavia_member_"}


@dataclass
class _Builder:
    """Sample lines grouped by family, in the order families are first used."""

    lines: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, suffix: str, labels: Iterable[tuple[str, str]], value: int) -> None:
        name = PREFIXES[kind] + suffix
        self.lines.setdefault(name, []).append(sample_line(name, labels, value))

    def states(self, kind: str, labels: list[tuple[str, str]], states: tuple[str, ...], state: str) -> None:
        for candidate in states:
            self.add(kind, "status", [*labels, ("state", candidate)], int(candidate == state))

    def families(self) -> list[Family]:
        built = []
        for name, lines in self.lines.items():
            kind, suffix = next((k, name[len(p) :]) for k, p in PREFIXES.items() if name.startswith(p))
            family_type, text = BY_SUFFIX[suffix]
            built.append(Family(name, family_type, text.format(kind=kind), tuple(lines)))
        return built


def _number(values: dict[str, str], column: str) -> int:
    try:
        return int(values.get(column, "0"))
    except ValueError:
        return 0


def _reals(config: LvsConfig, table: IpvsTable, member: RealServer | None = None) -> Iterator[Real]:
    """The real servers of the listener's services (only ``member``'s when given)."""
    for endpoint in endpoints(config):
        service = table.get(endpoint)
        for real in service.reals if service else []:
            if member is None or (real.address, real.port) == (member.address, member.port):
                yield real


def _services(config: LvsConfig, table: IpvsTable) -> list[dict[str, str]]:
    """The rows of the listener's virtual services that ``table`` lists."""
    return [table[endpoint].values for endpoint in endpoints(config) if endpoint in table]


def _connections(reals: Iterable[Real]) -> int:
    return sum(_number(r.values, "ActiveConn") + _number(r.values, "InActConn") for r in reals)


def _counters(out: _Builder, kind: str, labels: list[tuple[str, str]], rows: list[dict[str, str]]) -> None:
    """The ``--stats`` counters summed over ``rows``; nothing when there is no row."""
    if not rows:
        return
    for column, suffix in COUNTERS:
        value = sum(_number(row, column) for row in rows)
        out.add(kind, suffix, labels, value)
        if kind == "listener" and suffix == "sessions_total":
            out.add(kind, "connections_total", labels, value)


def _listener(out: _Builder, listener_id: str, config: LvsConfig, snapshot: LvsSnapshot) -> None:
    labels = [("listener", listener_id)]
    if snapshot.listing is not None and _services(config, snapshot.listing):
        out.add("listener", "current_sessions", labels, _connections(_reals(config, snapshot.listing)))
    if snapshot.stats is not None:
        _counters(out, "listener", labels, _services(config, snapshot.stats))


def _pool(out: _Builder, listener_id: str, config: LvsConfig, snapshot: LvsSnapshot) -> None:
    """Status and members from the kernel's table; counters of the virtual services (one pool each)."""
    if config.pool_id is None:
        return
    pool = [("pool", f"{config.pool_id}:{listener_id}")]
    sample = None
    if snapshot.table is not None:
        sample = pool_sample(config, snapshot.table, listener_id in snapshot.restarting)
    if sample is not None:
        out.states("pool", pool, POOL_STATES, sample.status)
        active = sum(1 for status in sample.members.values() if status in ("UP", "no check"))
        out.add("pool", "active_members", pool, active)
    if snapshot.listing is not None and _services(config, snapshot.listing):
        out.add("pool", "current_sessions", pool, _connections(_reals(config, snapshot.listing)))
    if snapshot.stats is not None:
        _counters(out, "pool", pool, _services(config, snapshot.stats))
    for member in config.members:
        if member.member_id is not None:
            _member(out, pool, member, config, snapshot, sample.members if sample else None)


def _member(
    out: _Builder,
    pool: list[tuple[str, str]],
    member: RealServer,
    config: LvsConfig,
    snapshot: LvsSnapshot,
    statuses: dict[str, str] | None,
) -> None:
    """Status from the pool sample; figures only while IPVS lists the member."""
    labels = [*pool, ("member", member.member_id or "")]
    if statuses is not None and member.member_id in statuses:
        out.states("member", labels, MEMBER_STATES, MEMBER_STATE.get(statuses[member.member_id], "DOWN"))
    if not member.enabled:
        return
    listed = list(_reals(config, snapshot.listing, member)) if snapshot.listing is not None else []
    if listed:
        out.add("member", "current_sessions", labels, _connections(listed))
        out.add("member", "weight", labels, max(_number(r.values, "Weight") for r in listed))
    if snapshot.stats is not None:
        _counters(out, "member", labels, [real.values for real in _reals(config, snapshot.stats, member)])


def families(snapshot: LvsSnapshot) -> list[Family]:
    """The ``octavia_*`` families of every running, enabled LVS listener in ``snapshot``."""
    out = _Builder()
    for listener_id in snapshot.open_ids:
        out.states("listener", [("listener", listener_id)], LISTENER_STATES, "UP")
    for listener_id, config in snapshot.configs.items():
        _listener(out, listener_id, config, snapshot)
    for listener_id, config in snapshot.configs.items():
        _pool(out, listener_id, config, snapshot)
    return out.families()

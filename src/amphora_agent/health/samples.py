"""Pure parsers and samples for the heartbeat: haproxy's ``show stat`` CSV and the delta counters.

Nothing here does I/O: the heartbeat feeds it socket answers (or an LVS reader's data) and gets
typed samples back, so every rule is tested with table-driven cases and the controller's fixtures.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

COUNTER_FIELDS = ("bin", "bout", "ereq", "stot")  # the stats sent as deltas, as persisted
SHOW_STAT_ALL = "show stat -1 -1 -1"  # frontends, backends and servers: one query gives everything
REQUIRED_COLUMNS = ("pxname", "svname", "status")
COLUMNS = (*REQUIRED_COLUMNS, "weight", "scur", "stot", "bin", "bout", "ereq")

Counters = dict[str, dict[str, int]]  # listener id -> absolute value of each COUNTER_FIELDS entry


class StatsError(ValueError):
    """haproxy's answer cannot be read as the heartbeat needs it."""


@dataclass(frozen=True)
class ListenerSample:
    """One listener's status and absolute counters, from a FRONTEND row or from LVS."""

    status: str
    scur: int = 0
    stot: int = 0
    bin: int = 0
    bout: int = 0
    ereq: int = 0
    counted: bool = True  # False when the counters could not be read this beat (LVS: ipvsadm failed)

    def counters(self) -> dict[str, int]:
        """The absolute values the deltas are computed from."""
        return {"bin": self.bin, "bout": self.bout, "ereq": self.ereq, "stot": self.stot}


@dataclass(frozen=True)
class PoolSample:
    """A pool's status and its members' statuses, in haproxy's order."""

    status: str
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """What one collection found: listeners and pools keyed as the message keys them."""

    listeners: dict[str, ListenerSample] = field(default_factory=dict)
    pools: dict[str, PoolSample] = field(default_factory=dict)
    complete: bool = True  # False when a running load balancer did not answer

    def merged(self, other: Sample) -> Sample:
        """This sample followed by ``other`` (later keys win, as in the existing agent)."""
        return Sample(
            {**self.listeners, **other.listeners},
            {**self.pools, **other.pools},
            self.complete and other.complete,
        )


LvsSource = Callable[[], Sample]  # UDP/SCTP listeners (pools keyed by bare pool id)


def no_lvs() -> Sample:
    """An empty LVS source (the agent passes ``lvs_stats.LvsStats``): no UDP/SCTP listeners."""
    return Sample()


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """Rows of a ``show stat`` answer (``# `` header) with the columns the heartbeat reads.

    The internal Prometheus proxies are dropped, as the existing agent drops them.
    """
    if not text.startswith("# pxname,"):
        raise StatsError(f"not a show stat answer: {text[:60]!r}")
    lines = text[2:].splitlines()
    header = lines[0].split(",")
    if any(name not in header for name in REQUIRED_COLUMNS):
        raise StatsError(f"show stat header without {', '.join(REQUIRED_COLUMNS)}")
    columns = [(name, header.index(name)) for name in COLUMNS if name in header]
    last = max(index for _, index in columns)
    rows: list[dict[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        # Only the first columns are read: split just those (about 20 of 130), unless a quoted
        # field makes the line need a real CSV parse.
        fields = next(csv.reader([line])) if '"' in line else line.split(",", last + 1)
        row = {name: fields[index] if index < len(fields) else "" for name, index in columns}
        if "prometheus" not in row["pxname"]:
            rows.append(row)
    return rows


def _int(row: Mapping[str, str], name: str) -> int:
    text = row.get(name) or "0"
    try:
        return int(text)
    except ValueError as exc:
        raise StatsError(f"{row.get('pxname')}/{name}: not an integer: {text!r}") from exc


def listeners_from_rows(rows: Iterable[Mapping[str, str]]) -> dict[str, ListenerSample]:
    """One sample per FRONTEND row, keyed by listener id (the frontend name)."""
    return {
        row["pxname"]: ListenerSample(
            status=row["status"],
            scur=_int(row, "scur"),
            stot=_int(row, "stot"),
            bin=_int(row, "bin"),
            bout=_int(row, "bout"),
            ereq=_int(row, "ereq"),
        )
        for row in rows
        if row["svname"] == "FRONTEND"
    }


def member_status(row: Mapping[str, str]) -> str:
    """A server row's status; ``UP`` with weight 0 is reported as ``DRAIN`` (an old haproxy bug)."""
    if row["status"] == "UP" and row.get("weight") == "0":
        return "DRAIN"
    return row["status"]


def pools_from_rows(rows: Iterable[Mapping[str, str]]) -> dict[str, PoolSample]:
    """Pools keyed ``<pool_id>:<listener_id>`` (the backend name) with their members' statuses."""
    statuses: dict[str, str] = {}
    members: dict[str, dict[str, str]] = {}
    for row in rows:
        name = row["pxname"]
        if row["svname"] == "FRONTEND":
            continue
        pool = members.setdefault(name, {})
        if row["svname"] == "BACKEND":
            if len(name.split(":")) != 2:
                raise StatsError(f"backend {name!r} is not named <pool_id>:<listener_id>")
            statuses[name] = row["status"]
        else:
            pool[row["svname"]] = member_status(row)
    missing = [name for name in members if name not in statuses]
    if missing:
        raise StatsError(f"no BACKEND row for {', '.join(missing)}")
    return {name: PoolSample(statuses[name], pool) for name, pool in members.items()}


def sample_from_answer(text: str) -> Sample:
    """A load balancer's listeners and pools from one ``show stat -1 -1 -1`` answer.

    The existing agent sends a second query (``show stat -1 6 -1``) for the pools; it returns the same
    backend and server rows, so one query gives the same message in half the time.
    """
    rows = parse_show_stat(text)
    return Sample(listeners_from_rows(rows), pools_from_rows(rows))


def deltas(current: Mapping[str, int], last: Mapping[str, int] | None) -> dict[str, int]:
    """current - last per counter; the current value itself when it fell (haproxy restarted)."""
    result: dict[str, int] = {}
    for name in COUNTER_FIELDS:
        now = current[name]
        before = (last or {}).get(name)
        diff = now - before if before is not None else now
        result[name] = diff if diff >= 0 else now
    return result


def parse_counters(data: object) -> Counters:
    """The persisted counters (``{listener: {bin, bout, ereq, stot}}``); anything malformed is dropped."""
    counters: Counters = {}
    if not isinstance(data, dict):
        return counters
    for listener_id, values in data.items():
        if not isinstance(listener_id, str) or not isinstance(values, dict):
            continue
        kept = {
            name: value
            for name, value in values.items()
            if name in COUNTER_FIELDS and isinstance(value, int) and not isinstance(value, bool)
        }
        if kept:
            counters[listener_id] = kept
    return counters

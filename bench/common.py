"""Shared pieces of the benchmarks: an mTLS keep-alive client, statistics, a bounded load, a figure table."""

from __future__ import annotations

import contextlib
import http.client
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import namespaces
from lab.configs import CLIENT_ADDRESS, HAPROXY_MEMBER_SIDE, MEMBER_HOSTS, VIP, Member
from lab.namespaces import MTLSConnection as MTLSConnection  # re-exported for the benchmarks


class AgentClient:
    """A light client over one kept-alive mTLS connection: little client time in the figures."""

    def __init__(self, amp: namespaces.Amphora) -> None:
        self._conn = amp.https()
        self.reconnects = 0

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request on the kept-alive connection (reconnecting once if the agent closed it)."""
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=body)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._conn.close()
                self.reconnects += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def expect(self, method: str, path: str, status: int, body: bytes | None = None) -> bytes:
        """A request that must answer ``status``."""
        got, data = self.request(method, path, body)
        if got != status:
            raise RuntimeError(f"{method} {path} answered {got}: {data[:500]!r}")
        return data

    def timed(self, method: str, path: str, status: int, body: bytes | None = None) -> float:
        """Seconds one request took (it must answer ``status``)."""
        started = time.perf_counter()
        self.expect(method, path, status, body)
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with one decimal below 100."""
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def median_p99(values: list[float]) -> str:
    """``median / p99`` in ms."""
    return f"{ms(statistics.median(values))} / {ms(percentile(values, 99))}"


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (VmRSS, VmHWM, Threads), 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process itself has used, in seconds (children not counted)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def roomy_client_ports() -> None:
    """Let this (private) namespace's clients reuse TIME_WAIT ports and use the whole port range.

    A load that opens a new connection per request for minutes (about 500/s here) otherwise runs
    out of ephemeral ports towards the one VIP:port (28,000 ports, 60 s in TIME_WAIT each), and the
    client's ``EADDRNOTAVAIL`` would count as failed requests. Both settings are per namespace: call
    this after ``namespaces.isolate()``, never on the host.
    """
    namespaces.sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    namespaces.sh("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")


def loadavg() -> str:
    """The 1-minute load average and the number of cores, for reading the figures."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its target and the existing agent's baseline."""

    name: str
    value: str
    target: str = "-"
    baseline: str = "-"
    met: bool | None = None  # None: no target


def print_figures(title: str, figures: list[Figure], note: str = "") -> None:
    """An aligned table: figure | measured | target | existing agent | verdict."""
    header = Figure("figure", "measured", "target", "existing agent")
    widths = [
        max(len(getattr(f, key)) for f in [header, *figures])
        for key in ("name", "value", "target", "baseline")
    ]
    print(f"\n== {title} ==")
    if note:
        print(note)
    for index, f in enumerate([header, *figures]):
        verdict = "verdict" if index == 0 else {True: "ok", False: "MISSED", None: ""}[f.met]
        cells = (f.name, f.value, f.target, f.baseline)
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + "  " + verdict
        )
        if index == 0:
            print("-" * (sum(widths) + 2 * len(widths) + 7))


TWO_MEMBERS = (Member("member-1", MEMBER_HOSTS[0], 80), Member("member-2", MEMBER_HOSTS[1], 80))


def start_serving(amp: namespaces.Amphora, members: namespaces.Backends) -> None:
    """Create the amphora, start its agent, wire the demo's VIP network and start two members."""
    amp.create()
    amp.start_agent()
    amp.wire_tenant(
        vips=[f"{VIP}/24"],
        member_addresses=[CLIENT_ADDRESS, *(f"{host}/24" for host in MEMBER_HOSTS)],
        haproxy_side=[HAPROXY_MEMBER_SIDE],
    )
    for member in TWO_MEMBERS:
        members.start(member.address, member.port, member.name)


@contextlib.contextmanager
def lab_amphora(prefix: str) -> Iterator[tuple[namespaces.Amphora, namespaces.Backends]]:
    """An amphora (not created yet) and member servers; everything is removed by PID afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        amp = namespaces.Amphora(Path(tmp))
        members = namespaces.Backends()
        try:
            yield amp, members
        finally:
            members.stop()
            amp.destroy()

"""Soak: 1,000 config updates with reloads while traffic flows; memory, descriptors and processes stay flat.

``python -m bench soak`` (``--updates N``, 1,000 by default; about 3-5 min). Needs root: it moves
itself into a private network namespace and runs a real agent and haproxy in namespaces of its own.

One load balancer with 3 HTTP listeners (the controller's config shape) serves 2 client threads that
open a new connection per request for the whole run, while heartbeats go out every second. Each
update is a ``PUT .../haproxy`` of a config that differs from the last (an L7 redirect names the
update's number) followed by ``PUT .../reload``. Measured after a warm-up of 100 updates and again
at the end (after the old workers finished): the agent's and haproxy's resident memory, their open
file descriptors (``/proc/<pid>/fd``), the processes of the amphora (agent, haproxy master and
workers) and of the whole machine (informational: other work on the machine changes it), and the
network namespaces of the run; and, after the clean-up, that none of its namespaces or processes
is left.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    TWO_MEMBERS,
    AgentClient,
    Figure,
    lab_amphora,
    loadavg,
    median_p99,
    print_figures,
    proc_status,
    roomy_client_ports,
    start_serving,
)
from lab import namespaces
from lab.configs import VIP, Listener, Load, fixed_id, render_config
from lab.namespaces import preflight

LB_ID = fixed_id("bench/soak-loadbalancer")
MEMBERS = TWO_MEMBERS
PORTS = (80, 8080, 8081)
DEFAULT_UPDATES, WARM_UP = 1000, 100
GROWTH_TARGET = 0.10
HEARTBEAT_KEY = "soak-heartbeat-key"
CLIENTS = 2  # threads, each a new connection per request (2 cores: the rest is for the agent and haproxy)


def listeners(update: int) -> tuple[Listener, ...]:
    """3 HTTP listeners; an L7 redirect on ``/update`` names the update, so every config differs."""
    rules = {port: fixed_id(f"soak/l7rule/{port}") for port in PORTS}
    return tuple(
        Listener(
            f"soak-{port}",
            "HTTP",
            port,
            MEMBERS,
            (
                f"acl {rules[port]} path -m beg /update",
                f"redirect code 302 prefix http://update-{update}.example.com if {rules[port]}",
            ),
        )
        for port in PORTS
    )


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (-1 when unreadable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass(frozen=True)
class Snapshot:
    """What is measured after the warm-up and again at the end."""

    agent_rss: float  # MiB
    master_rss: float
    worker_rss: float  # the sum over live workers (normally one)
    agent_fds: int
    master_fds: int
    amphora_processes: int  # the agent, haproxy master and workers
    workers: int
    machine_processes: int
    namespaces: int


def snapshot(amp: namespaces.Amphora, agent_pid: int) -> Snapshot:
    """Memory, descriptors, processes and namespaces now."""
    haproxy = amp.haproxy_processes()
    masters = amp.haproxy_pids()
    master = masters[0] if masters else 0
    workers = [pid for pid in haproxy if pid != master]
    return Snapshot(
        agent_rss=proc_status(agent_pid, "VmRSS") / 1024,
        master_rss=proc_status(master, "VmRSS") / 1024,
        worker_rss=sum(proc_status(pid, "VmRSS") for pid in workers) / 1024,
        agent_fds=fd_count(agent_pid),
        master_fds=fd_count(master),
        amphora_processes=1 + len(haproxy),
        workers=len(workers),
        machine_processes=sum(1 for entry in os.listdir("/proc") if entry.isdigit()),
        namespaces=len(our_namespaces()),
    )


def our_namespaces() -> list[str]:
    """The named network namespaces this run created (``lab`` names them after our pid)."""
    prefix = f"amp{os.getpid() % 100000}-"
    return (
        [name for name in os.listdir("/run/netns") if name.startswith(prefix)]
        if os.path.isdir("/run/netns")
        else []
    )


def left_behind(workdir: Path) -> list[int]:
    """Live processes whose command line names ``workdir`` (agent, haproxy, keepalived, members)."""
    marker = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def settle(amp: namespaces.Amphora, timeout: float = 30.0) -> None:
    """Wait until the old workers have finished (one master and one worker left)."""
    namespaces.wait_until(lambda: len(amp.haproxy_processes()) <= 2, timeout, 0.1)


def growth(before: float, after: float) -> float:
    """Relative growth (0.05 = 5 %)."""
    return (after - before) / before if before else 0.0


class Heartbeats:
    """The health manager's end: counts the heartbeats the agent sends during the run."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind(("::", 0))
        self.sock.settimeout(0.5)
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """Our UDP port."""
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(70000)
                self.received += 1
            except OSError:
                continue

    def close(self) -> None:
        """Stop counting and close the socket."""
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def run(amp: namespaces.Amphora, members: namespaces.Backends, updates: int) -> list[Figure]:
    """Set up, update ``updates`` times under traffic, and return the figures."""
    beats = Heartbeats()
    try:
        amp.extra_config = {
            "health_manager": {
                "controller_ip_port_list": f"[2001:db8:f00:{amp.index:x}::1]:{beats.port}",
                "heartbeat_interval": "1",
                "heartbeat_key": HEARTBEAT_KEY,
            },
            "DEFAULT": {"debug": "False"},
        }
        return _run(amp, members, updates, beats)
    finally:
        beats.close()


def _run(
    amp: namespaces.Amphora, members: namespaces.Backends, updates: int, beats: Heartbeats
) -> list[Figure]:
    namespaces_before = len(our_namespaces())
    processes_before = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    start_serving(amp, members)
    assert amp.process is not None
    agent_pid = amp.process.pid
    api = AgentClient(amp)
    put = f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy"
    reload = f"/1.0/loadbalancer/{LB_ID}/reload"
    api.expect("PUT", put, 202, render_config(LB_ID, VIP, listeners(0), amp.base))
    api.expect("PUT", reload, 202)
    namespaces.wait_until(lambda: len(amp.haproxy_pids()) == 1, 10)
    first_master = amp.haproxy_pids()[0]
    failed_api: list[str] = []
    times: list[float] = []
    warm: Snapshot | None = None
    began = time.monotonic()
    load = Load(VIP, PORTS[0], threads=CLIENTS, max_seconds=updates * 2.0 + 120, max_requests=50_000_000)
    with load:
        for update in range(1, updates + 1):
            started = time.perf_counter()
            for method, path, body in (
                ("PUT", put, render_config(LB_ID, VIP, listeners(update), amp.base)),
                ("PUT", reload, None),
            ):
                status, data = api.request(method, path, body)
                if status != 202:
                    failed_api.append(f"update {update}: {method} {path} -> {status} {data[:200]!r}")
            times.append(time.perf_counter() - started)
            if update == WARM_UP:
                settle(amp)
                warm = snapshot(amp, agent_pid)
            if update % 200 == 0:
                print(f"  {update} updates ({load.ok} requests, {load.failed} failed) ...", flush=True)
    elapsed = time.monotonic() - began
    settle(amp)
    end = snapshot(amp, agent_pid)
    api.close()
    assert warm is not None
    master_now = amp.haproxy_pids()[0]
    agent_growth = growth(warm.agent_rss, end.agent_rss)
    master_growth = growth(warm.master_rss, end.master_rss)
    worker_growth = growth(warm.worker_rss, end.worker_rss)
    flat = f"growth < {GROWTH_TARGET:.0%}"
    figures = [
        Figure(
            f"Failed tenant requests during {updates} updates + reloads",
            f"{load.failed} of {load.ok + load.failed}",
            "0",
            "-",
            load.failed == 0 and load.ok > 0,
        ),
        Figure(
            "Failed API calls (PUT haproxy + PUT reload)",
            f"{len(failed_api)} of {2 * updates}",
            "0",
            "-",
            not failed_api,
        ),
        Figure("  update (PUT + reload) median / p99", median_p99(times)),
        Figure(
            f"Agent RSS after {WARM_UP} updates -> at the end",
            f"{warm.agent_rss:.1f} -> {end.agent_rss:.1f} MiB ({agent_growth:+.1%})",
            flat,
            "-",
            agent_growth < GROWTH_TARGET,
        ),
        Figure(
            "haproxy master RSS (same master all along)",
            f"{warm.master_rss:.1f} -> {end.master_rss:.1f} MiB ({master_growth:+.1%})"
            + ("" if master_now == first_master else " (master changed!)"),
            flat,
            "-",
            master_growth < GROWTH_TARGET and master_now == first_master,
        ),
        Figure(
            "haproxy worker RSS (the current worker)",
            f"{warm.worker_rss:.1f} -> {end.worker_rss:.1f} MiB ({worker_growth:+.1%})",
            flat,
            "-",
            worker_growth < GROWTH_TARGET,
        ),
        Figure(
            "Agent open file descriptors",
            f"{warm.agent_fds} -> {end.agent_fds}",
            "no growth",
            "-",
            end.agent_fds <= warm.agent_fds,
        ),
        Figure(
            "haproxy master open file descriptors",
            f"{warm.master_fds} -> {end.master_fds}",
            "no growth",
            "-",
            end.master_fds <= warm.master_fds,
        ),
        Figure(
            "Amphora processes (agent + haproxy master + workers)",
            f"{warm.amphora_processes} -> {end.amphora_processes} ({end.workers} worker(s))",
            "no growth",
            "-",
            end.amphora_processes <= warm.amphora_processes,
        ),
        Figure(
            "Processes on the machine (before the amphora -> warm -> end)",
            f"{processes_before} -> {warm.machine_processes} -> {end.machine_processes}",
        ),
        Figure(
            "Network namespaces of this run (before the amphora -> warm -> end)",
            f"{namespaces_before} -> {warm.namespaces} -> {end.namespaces}",
            "no growth",
            "-",
            end.namespaces <= warm.namespaces,
        ),
        Figure("  heartbeats received", f"{beats.received} in {elapsed:.0f} s"),
    ]
    for line in failed_api[:3]:
        print(f"  {line}")
    if load.errors:
        print(f"  first load errors: {load.errors[:3]}")
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the soak benchmark in a private namespace; 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=DEFAULT_UPDATES, help="config updates with reloads")
    args = parser.parse_args(argv)
    if args.updates <= WARM_UP:
        parser.error(f"--updates must be more than the {WARM_UP} warm-up updates")
    problem = preflight()
    if problem:
        print(f"soak bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    roomy_client_ports()  # a new connection per request for minutes
    print(f"soak bench: {args.updates} updates with reloads under traffic ({loadavg()} at start)", flush=True)
    with lab_amphora("ampsoak") as (amp, members):
        figures = run(amp, members, args.updates)
    left_namespaces, processes = our_namespaces(), left_behind(amp.workdir)  # after the clean-up
    figures.append(
        Figure(
            "Left after clean-up: namespaces / processes of the run",
            f"{len(left_namespaces)} / {len(processes)}",
            "0 / 0",
            "-",
            not left_namespaces and not processes,
        )
    )
    print_figures("soak: updates and reloads under traffic", figures, f"{loadavg()} at the end")
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

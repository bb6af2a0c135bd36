"""Heartbeat: time to collect, build and sign one heartbeat beside the raw ``show stat``, and its size.

``python -m bench heartbeat``. Needs root: it moves itself into a private network namespace, runs one
real haproxy per size (1, 10 and 100 listeners, 5 members each, in the controller's config shape) and
measures, in the same loop on the same sockets, the raw ``show stat -1 -1 -1`` the heartbeat issues and
the agent's own path (socket query, CSV parse, deltas, JSON, zlib 9, HMAC). The haproxy processes are
stopped by PID at the end.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amphora_agent.health import codec, samples, sender
from amphora_agent.layout import Layout
from amphora_agent.system import haproxy
from bench.common import Figure, loadavg, median_p99, ms, print_figures
from lab import namespaces
from lab.configs import Listener, Member, fixed_id, render_config

SIZES = (1, 10, 100)
MEMBERS = 5
ROUNDS = {1: 300, 10: 300, 100: 150}
KEY = "bench-heartbeat-key"
AMPHORA_ID = fixed_id("bench/amphora")
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4


def write_lb(base: Path, size: int) -> tuple[str, Path]:
    """A load balancer with ``size`` HTTP listeners of 5 members (closed ports: they go DOWN)."""
    lb_id = fixed_id(f"bench/heartbeat-{size}")
    listeners = tuple(
        Listener(
            f"hb{size}-{i}",
            "HTTP",
            20000 + i,
            tuple(Member(f"hb{size}-{i}-{m}", "127.0.0.2", 30000 + m) for m in range(MEMBERS)),
        )
        for i in range(size)
    )
    config = base / lb_id / "haproxy.cfg"
    config.parent.mkdir(parents=True)
    config.write_bytes(render_config(lb_id, "127.0.0.1", listeners, base, maxconn=2000))
    return lb_id, config


def start_haproxy(config: Path, pid_file: Path, socket_path: Path) -> int:
    """A daemonised haproxy on ``config``; its pid once the stats socket answers."""
    subprocess.run(["haproxy", "-D", "-f", str(config), "-p", str(pid_file)], check=True, timeout=30)
    pid = haproxy.read_pid(pid_file)
    if pid is None or not namespaces.wait_until(
        lambda: "FRONTEND" in haproxy.stats_query(socket_path, "show stat"), 10
    ):
        raise RuntimeError(f"haproxy on {config} did not come up")
    return pid


def measure(base: Path, size: int, pids: list[int]) -> list[Figure]:
    """Raw show stat and one heartbeat, alternated on the same socket; the figures of one size."""
    lb_id, config = write_lb(base, size)
    layout = Layout(base, base / "certs")
    socket_path = layout.stats_socket(lb_id)
    pids.append(start_haproxy(config, base / lb_id / "haproxy.pid", socket_path))
    state = sender.HeartbeatState(base)
    raw: list[float] = []
    beat: list[float] = []
    persist: list[float] = []
    datagram = b""
    for seq in range(ROUNDS[size]):
        started = time.perf_counter()
        haproxy.stats_query(socket_path, samples.SHOW_STAT_ALL)
        raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        sample = sender.collect_haproxy(layout, lambda _lb: True)
        message, counters = sender.build_message(AMPHORA_ID, seq, sample, state.counters)
        datagram = codec.wrap(codec.encode(message), KEY)
        beat.append(time.perf_counter() - started)
        started = time.perf_counter()
        state.save(seq, counters)
        persist.append(time.perf_counter() - started)
    decoded = codec.decode(datagram, KEY)
    if len(decoded["listeners"]) != size or len(decoded["pools"]) != size:
        raise RuntimeError(f"the heartbeat lists {len(decoded['listeners'])} listeners, not {size}")
    raw_median, beat_median = statistics.median(raw), statistics.median(beat)
    limit = 2 * raw_median + 0.005
    json_size = len(codec.encode(decoded))
    return [
        Figure(f"{size} listener(s): raw show stat (median / p99)", median_p99(raw)),
        Figure(
            f"{size} listener(s): collect+build+sign (median / p99)",
            median_p99(beat),
            f"<= 2 x raw + 5 ms = {ms(limit)}",
            met=beat_median <= limit,
        ),
        Figure(f"{size} listener(s): persist counters + seq (fsync)", median_p99(persist)),
        Figure(
            f"{size} listener(s): datagram (JSON)",
            f"{len(datagram)} B ({json_size} B)",
            f"one datagram, < {MAX_DATAGRAM} B",
            met=len(datagram) < MAX_DATAGRAM,
        ),
    ]


def main() -> int:
    """Run every size in a private namespace and print the figures beside their targets."""
    namespaces.isolate()
    print(
        f"heartbeat bench: {', '.join(map(str, SIZES))} listeners x {MEMBERS} members ({loadavg()})",
        flush=True,
    )
    figures: list[Figure] = []
    pids: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hbbench") as tmp:
        try:
            for size in SIZES:
                figures += measure(Path(tmp) / f"size{size}", size, pids)
        finally:
            for pid in pids:
                namespaces.kill_pid(pid)
    print_figures(
        "heartbeat: collect, build and sign one beat",
        figures,
        f"{loadavg()} at the end; raw and heartbeat alternate on the same stats socket; "
        "the heartbeat issues that one query (the existing agent issues two)",
    )
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

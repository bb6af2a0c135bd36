"""A PROMETHEUS listener's scrape: latency and agent CPU per scrape, agent RSS over 1,000 scrapes.

``python -m bench metrics`` (``python -m bench.metrics_bench --scrapes N --rss-scrapes N``). Needs
root: a real agent in a lab amphora runs a load balancer of 1, 10 and 100 HTTP listeners (5 members
each) plus a PROMETHEUS listener in the controller's shape. A client thread inside the haproxy
namespace fetches haproxy's own exporter (127.0.0.1:9101) and the agent's endpoint (127.0.0.1:9102)
in turn, each on a new connection read to the last byte, with the same code: the target compares
the two. The same scrape through the PROMETHEUS listener's VIP is shown beside them, and the API's
latency while scrapes run back to back.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from amphora_agent.system import netns
from bench.common import (
    AgentClient,
    Figure,
    cpu_seconds,
    lab_amphora,
    loadavg,
    median_p99,
    ms,
    print_figures,
    proc_status,
)
from lab import namespaces
from lab.configs import (
    CLIENT_ADDRESS,
    HAPROXY_MEMBER_SIDE,
    VIP,
    Listener,
    Member,
    fixed_id,
    prometheus_sections,
    render_config,
)
from lab.namespaces import preflight

LB_ID = fixed_id("bench/metrics/loadbalancer")
SIZES = (1, 10, 100)
MEMBERS = tuple(Member(f"metrics-{i}", f"203.0.113.{21 + i}", 80) for i in range(5))
PROMETHEUS_PORT = 9100
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
MAX_SECONDS = 600.0  # every loop is bounded in count and in time
WARM_UP = 100
T = TypeVar("T")


def fetch(host: str, port: int, timeout: float = 10.0) -> tuple[float, int, bytes]:
    """(seconds to the last byte, bytes, status line) of one GET on a new connection."""
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(REQUEST % host.encode())
        size, first = 0, b""
        while data := sock.recv(1 << 20):
            first = first or data[:40]
            size += len(data)
    return time.perf_counter() - started, size, first.split(b"\r\n", 1)[0]


def config(size: int, base: Path) -> bytes:
    """``size`` HTTP listeners of 5 members and a PROMETHEUS listener, in the controller's shape."""
    listeners = tuple(Listener(f"metrics-{i}", "HTTP", 8000 + i, MEMBERS) for i in range(size))
    body = render_config(LB_ID, VIP, listeners, base)
    return body + prometheus_sections(fixed_id("bench/metrics/prometheus"), VIP, PROMETHEUS_PORT)


class MetricsBench:
    """One amphora; each size is uploaded in turn and measured."""

    def __init__(self, amp: namespaces.Amphora, scrapes: int) -> None:
        self.amp = amp
        self.api = AgentClient(amp)
        assert amp.process is not None
        self.pid = amp.process.pid
        self.scrapes = scrapes

    def load(self, size: int) -> None:
        """Upload and start the load balancer; wait until the agent's endpoint answers 200."""
        body = config(size, self.amp.base)
        self.api.expect("PUT", f"/1.0/loadbalancer/{self.amp.amphora_id}/{LB_ID}/haproxy", 202, body)
        self.api.expect("PUT", f"/1.0/loadbalancer/{LB_ID}/reload", 202)
        if not namespaces.wait_until(lambda: self.answers(9102), 20):
            raise RuntimeError("the agent's endpoint does not answer 200")

    def answers(self, port: int) -> bool:
        """Whether 127.0.0.1:<port> in the haproxy namespace answers 200."""
        return self.inside(lambda: fetch("127.0.0.1", port))[2].endswith(b"200 OK")

    def inside(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a thread inside the haproxy namespace."""
        return netns.call_in(self.amp.haproxy_ns, work)

    def idle_cpu(self, seconds: float = 2.0) -> float:
        """The agent's CPU seconds per second while nobody scrapes (its supervisor and heartbeat)."""
        before = cpu_seconds(self.pid)
        time.sleep(seconds)
        return (cpu_seconds(self.pid) - before) / seconds

    def measure(self, size: int) -> list[Figure]:
        """Direct and agent scrapes in turn, agent CPU per scrape, the VIP path."""
        self.load(size)
        count = self.scrapes if size < 100 else max(self.scrapes // 2, 20)

        def pairs() -> tuple[list[float], list[float], float, int, int]:
            direct: list[float] = []
            agent: list[float] = []
            cpu = 0.0
            deadline = time.monotonic() + MAX_SECONDS / 4
            raw_size = agent_size = 0
            for _ in range(count):
                if time.monotonic() > deadline:
                    break
                took, raw_size, _ = fetch("127.0.0.1", 9101)
                direct.append(took)
                before = cpu_seconds(self.pid)
                took, agent_size, status = fetch("127.0.0.1", 9102)
                cpu += cpu_seconds(self.pid) - before
                if not status.endswith(b"200 OK"):
                    raise RuntimeError(f"the agent answered {status!r}")
                agent.append(took)
            return direct, agent, cpu / max(len(agent), 1), raw_size, agent_size

        idle = self.idle_cpu()
        direct, agent, cpu, raw_size, agent_size = self.inside(pairs)
        cpu -= idle * sum(agent) / max(len(agent), 1)  # the supervisor's and heartbeat's share
        vip = [fetch(VIP, PROMETHEUS_PORT)[0] for _ in range(min(count, 20))]
        limit = 2 * statistics.median(direct) + 0.005
        label = f"{size} listener(s) x 5 members"
        return [
            Figure(
                f"{label}: haproxy's /metrics directly (median / p99)",
                f"{median_p99(direct)} ({raw_size / 1e6:.2f} MB)",
            ),
            Figure(
                f"{label}: agent's endpoint (median / p99)",
                f"{median_p99(agent)} ({agent_size / 1e6:.2f} MB)",
                f"<= 2 x direct + 5 ms = {ms(limit)}",
                met=statistics.median(agent) <= limit if size == 100 else None,
            ),
            Figure(f"{label}: agent CPU per scrape (mean of {len(agent)}, idle CPU taken off)", ms(cpu)),
            Figure(f"{label}: through the PROMETHEUS listener's VIP (median / p99)", median_p99(vip)),
        ]

    def rss(self, scrapes: int) -> list[Figure]:
        """Agent RSS over ``scrapes`` scrapes of 100 listeners after a warm-up of ``WARM_UP``.

        RSS is read every tenth of the run. The allocator's heaps swing by a few MiB from one scrape
        to the next (7 MB in, 5 MB out each time), so growth is the highest of the last three
        readings minus the highest of the first three: a leak raises both the level and the peaks.
        """
        before = proc_status(self.pid, "VmRSS")

        def run(count: int) -> int:
            deadline = time.monotonic() + MAX_SECONDS
            done = 0
            while done < count and time.monotonic() < deadline:
                if not fetch("127.0.0.1", 9102)[2].endswith(b"200 OK"):
                    raise RuntimeError("a scrape failed")
                done += 1
            return done

        self.inside(lambda: run(WARM_UP))
        readings, done = [], 0
        for _ in range(10):
            done += self.inside(lambda: run(max(scrapes // 10, 1)))
            readings.append(proc_status(self.pid, "VmRSS") / 1024)
        growth = max(readings[-3:]) - max(readings[:3])
        peak = proc_status(self.pid, "VmHWM") / 1024
        return [
            Figure("agent RSS after the scrapes above (100 listeners loaded)", f"{before / 1024:.1f} MiB"),
            Figure(
                f"agent RSS every {scrapes // 10} of {done:,} scrapes (after {WARM_UP})",
                " ".join(f"{value:.1f}" for value in readings) + " MiB",
            ),
            Figure(
                f"agent RSS growth over {done:,} scrapes",
                f"{growth:+.1f} MiB (peak {peak:.1f} MiB)",
                "<= 2 MiB",
                met=growth <= 2.0 and done >= scrapes - scrapes % 10,
            ),
        ]

    def api_while_scraping(self) -> list[Figure]:
        """``GET /1.0/info`` latency idle, then while a client scrapes 100 listeners back to back."""
        idle = [self.api.timed("GET", "/1.0/info", 200) for _ in range(100)]
        stop = threading.Event()
        scraped = [0]

        def scrape_loop() -> None:
            deadline = time.monotonic() + MAX_SECONDS / 4
            while not stop.is_set() and time.monotonic() < deadline:
                fetch("127.0.0.1", 9102)
                scraped[0] += 1

        worker = threading.Thread(target=lambda: self.inside(scrape_loop), daemon=True)
        worker.start()
        time.sleep(0.2)
        busy = [self.api.timed("GET", "/1.0/info", 200) for _ in range(100)]
        stop.set()
        worker.join(30)
        return [
            Figure("GET /1.0/info idle (median / p99)", median_p99(idle)),
            Figure(
                f"GET /1.0/info during back-to-back scrapes of 100 listeners ({scraped[0]} scrapes)",
                median_p99(busy),
                "API answers (no stall beyond a scrape)",
                met=max(busy) < 1.0,
            ),
        ]


def main(argv: list[str] | None = None) -> int:
    """Measure every size, RSS over many scrapes and the API meanwhile; print beside the targets."""
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_bench", description=__doc__)
    parser.add_argument("--scrapes", type=int, default=100, help="scrape pairs per size (half for 100)")
    parser.add_argument("--rss-scrapes", type=int, default=1000, help="scrapes for the RSS figure")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    problem = preflight()
    if problem:
        print(f"metrics bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    print(f"metrics bench: {', '.join(map(str, SIZES))} listeners x 5 members ({loadavg()})", flush=True)
    figures: list[Figure] = []
    with lab_amphora("metricsbench") as (amp, members):
        amp.create()
        amp.start_agent()
        amp.wire_tenant(
            vips=[f"{VIP}/24"],
            member_addresses=[CLIENT_ADDRESS, *(f"{m.address}/24" for m in MEMBERS)],
            haproxy_side=[HAPROXY_MEMBER_SIDE],
        )
        for member in MEMBERS:
            members.start(member.address, member.port, member.name)
        bench = MetricsBench(amp, args.scrapes)
        time.sleep(1.0)  # settled after start-up
        started_rss = proc_status(bench.pid, "VmRSS")
        for size in SIZES:
            figures += bench.measure(size)
        figures.append(Figure("agent RSS at start (no load balancer)", f"{started_rss / 1024:.1f} MiB"))
        figures += bench.rss(args.rss_scrapes)
        figures += bench.api_while_scraping()
        bench.api.close()
    print_figures(
        "metrics: a PROMETHEUS listener's scrape",
        figures,
        f"{loadavg()} at the end; direct and agent scrapes alternate, from one client thread inside "
        "the haproxy namespace, each on a new connection read to the last byte (answer size in brackets).",
    )
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

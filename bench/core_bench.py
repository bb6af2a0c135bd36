"""Agent core: memory, API latency over kept-alive mTLS, throughput, config change time, hitless reloads.

``python -m bench core`` (or ``make bench`` for every benchmark). Needs root: it moves itself into a
private network namespace and runs a real agent and haproxy in namespaces of their own (``lab``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import statistics
import subprocess
import sys
import time
from pathlib import Path

from amphora_agent.loadbalancers import haproxy_config
from bench.common import (
    TWO_MEMBERS,
    AgentClient,
    Figure,
    child_pids,
    cpu_seconds,
    lab_amphora,
    loadavg,
    median_p99,
    ms,
    print_figures,
    proc_status,
    start_serving,
)
from lab import namespaces
from lab.configs import HAPROXY, VIP, Listener, Load, fixed_id, http_get, render_config
from lab.namespaces import preflight

LB_ID = fixed_id("bench/loadbalancer")
LISTENERS = 10
FIRST_PORT = 8001
N_MIXED = 1000
N_INFO, N_DETAILS, N_LISTENERS, N_PUT = 300, 100, 300, 30
N_CHANGES = 15
N_RELOADS = 50
RPS_CLIENTS, RPS_SECONDS = 8, 5.0
MEMBERS = TWO_MEMBERS


def listeners(generation: int) -> tuple[Listener, ...]:
    """10 HTTP listeners; an L7 redirect policy on ``/generation`` names the config's generation."""
    return tuple(
        Listener(
            f"bench-{i}",
            "HTTP",
            FIRST_PORT + i,
            MEMBERS,
            (
                f"acl {fixed_id(f'bench/l7rule/{i}')} path -m beg /generation",
                f"redirect code 302 prefix http://gen-{generation}.example.com"
                f" if {fixed_id(f'bench/l7rule/{i}')}",
            ),
        )
        for i in range(LISTENERS)
    )


class CoreBench:
    """One amphora with a 10-listener load balancer, measured through its API."""

    def __init__(self, amp: namespaces.Amphora) -> None:
        self.amp = amp
        self.api = AgentClient(amp)
        self.put_path = f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy"
        self.reload_path = f"/1.0/loadbalancer/{LB_ID}/reload"
        self.check_file = amp.workdir / "check-alone.cfg"
        self.figures: list[Figure] = []
        assert amp.process is not None
        self.pid = amp.process.pid
        self.generation = 0

    def config(self, generation: int) -> bytes:
        """The bench load balancer's config of one generation."""
        return render_config(LB_ID, VIP, listeners(generation), self.amp.base)

    def check_alone(self, config: bytes) -> float:
        """Seconds of ``haproxy -c`` alone on ``config``, with the agent's own arguments."""
        self.check_file.write_bytes(config)
        argv = [str(HAPROXY), "-c", "-f", str(self.check_file)]
        argv += ["-f", str(self.amp.base / "haproxy-default-user-group.conf")]
        argv += ["-L", haproxy_config.peer_name(self.amp.amphora_id)]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"haproxy -c rejected the bench config: {done.stdout.decode()[-1000:]}")
        return elapsed

    def rss(self) -> float:
        """The agent's resident memory in MiB."""
        return proc_status(self.pid, "VmRSS") / 1024

    # -- phases -------------------------------------------------------------------------------
    def create_lb(self) -> None:
        """Upload the first config and start it; wait until every listener answers."""
        self.api.expect("PUT", self.put_path, 202, self.config(0))
        self.api.expect("PUT", self.reload_path, 202)
        self.wait_generation(0, timeout=15)

    def wait_generation(self, generation: int, timeout: float) -> None:
        """Poll every listener until it redirects with ``generation``'s prefix."""
        want = f"http://gen-{generation}.example.com/generation"
        deadline = time.monotonic() + timeout
        for i in range(LISTENERS):
            while True:
                try:
                    if http_get(VIP, FIRST_PORT + i, "/generation", timeout=1.0)[2] == want:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"listener :{FIRST_PORT + i} never answered generation {generation}")
                time.sleep(0.002)

    def mixed(self) -> None:
        """1,000 requests cycling over reads, certificate writes and config uploads."""
        pem = self.amp.ca.issue("bench-tls", server=True).bundle
        cert = f"/1.0/loadbalancer/{LB_ID}/certificates/bench.pem"
        body = self.config(self.generation)
        cycle: list[tuple[str, str, int, bytes | None]] = [
            ("GET", "/1.0/info", 200, None),
            ("GET", "/1.0/details", 200, None),
            ("GET", "/1.0/listeners", 200, None),
            ("GET", f"/1.0/loadbalancer/{LB_ID}/haproxy", 200, None),
            ("PUT", cert, 200, pem),
            ("GET", cert, 200, None),
            ("GET", "/", 200, None),
            ("GET", "/info", 200, None),
            ("GET", "/1.0/listeners", 200, None),
            ("PUT", self.put_path, 202, body),
        ]
        for index in range(N_MIXED):
            method, path, status, data = cycle[index % len(cycle)]
            self.api.expect(method, path, status, data)

    def latencies(self) -> None:
        """Median and p99 of the read routes and of PUT haproxy beside ``haproxy -c`` alone."""
        for path, count, target, baseline in (
            ("/1.0/info", N_INFO, 0.003, "27 ms"),
            ("/1.0/details", N_DETAILS, 0.030, "45 ms"),
            ("/1.0/listeners", N_LISTENERS, None, "-"),
        ):
            self.api.expect("GET", path, 200)  # warm
            cpu = cpu_seconds(self.pid)
            times = [self.api.timed("GET", path, 200) for _ in range(count)]
            cpu = (cpu_seconds(self.pid) - cpu) / count
            median = statistics.median(times)
            self.figures.append(
                Figure(
                    f"GET {path} median / p99 ({count}x, keep-alive)",
                    f"{median_p99(times)} (agent CPU {ms(cpu)}/req)",
                    f"median <= {ms(target)}" if target else "-",
                    f"{baseline} (new handshake each)" if target else baseline,
                    median <= target if target else None,
                )
            )
        body = self.config(self.generation)
        put_times, check_times, cpu = [], [], 0.0
        for _ in range(N_PUT):
            check_times.append(self.check_alone(body))
            before = cpu_seconds(self.pid)
            put_times.append(self.api.timed("PUT", self.put_path, 202, body))
            cpu += cpu_seconds(self.pid) - before
        check_median = statistics.median(check_times)
        self.figures.append(
            Figure(
                f"PUT .../haproxy median / p99 ({N_PUT}x, {LISTENERS} listeners)",
                f"{median_p99(put_times)} (agent CPU {ms(cpu / N_PUT)}/req)",
                f"median <= haproxy -c + 15 ms = {ms(check_median + 0.015)}",
                "-",
                statistics.median(put_times) <= check_median + 0.015,
            )
        )
        self.figures.append(Figure("  haproxy -c alone, same config, same run", median_p99(check_times)))
        overhead = statistics.median(p - c for p, c in zip(put_times, check_times, strict=True))
        self.figures.append(Figure("  PUT minus haproxy -c, median of pairs", ms(overhead), "<= 15 ms"))

    def throughput(self) -> None:
        """``GET /1.0/info`` requests/s from 8 processes, each on its own kept-alive connection."""
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.queues.Queue[tuple[int, int]] = ctx.Queue()
        start_at = time.time() + 1.5  # after every worker's handshake
        workers = [
            ctx.Process(target=_rps_worker, args=(self.amp, start_at, RPS_SECONDS, queue))
            for _ in range(RPS_CLIENTS)
        ]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=RPS_SECONDS + 60) for _ in workers]
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
        done, failed = sum(r[0] for r in results), sum(r[1] for r in results)
        rate = done / RPS_SECONDS
        self.figures.append(
            Figure(
                f"GET /1.0/info with {RPS_CLIENTS} concurrent clients ({RPS_SECONDS:.0f} s)",
                f"{rate:.0f} req/s ({failed} failed)",
                ">= 350 req/s",
                "35 req/s",
                rate >= 350 and failed == 0,
            )
        )

    def config_changes(self) -> None:
        """PUT + reload until all 10 listeners answer with the new config, beside ``haproxy -c`` alone."""
        totals, puts, reloads, checks = [], [], [], []
        for _ in range(N_CHANGES):
            self.generation += 1
            body = self.config(self.generation)
            checks.append(self.check_alone(body))
            started = time.perf_counter()
            puts.append(self.api.timed("PUT", self.put_path, 202, body))
            reloads.append(self.api.timed("PUT", self.reload_path, 202))
            self.wait_generation(self.generation, timeout=10)
            totals.append(time.perf_counter() - started)
        median = statistics.median(totals)
        self.figures += [
            Figure(
                f"Config change applied, {LISTENERS} listeners, median / p99 ({N_CHANGES}x)",
                median_p99(totals),
                "median <= 250 ms",
                "-",
                median <= 0.250,
            ),
            Figure("  of which PUT .../haproxy (median)", ms(statistics.median(puts))),
            Figure("  of which PUT .../reload (median)", ms(statistics.median(reloads))),
            Figure("  haproxy -c alone, same configs, same run", median_p99(checks)),
        ]

    def reloads_under_load(self) -> None:
        """50 reloads through the API while 4 threads open new connections to a listener."""
        times = []
        with Load(VIP, FIRST_PORT, threads=4, max_seconds=120) as load:
            time.sleep(0.3)
            for _ in range(N_RELOADS):
                times.append(self.api.timed("PUT", self.reload_path, 202))
        self.figures += [
            Figure(
                f"Failed requests across {N_RELOADS} reloads under load",
                f"{load.failed} of {load.ok + load.failed}",
                "0",
                "-",
                load.failed == 0 and load.ok > 0,
            ),
            Figure("  PUT .../reload median / p99 (under load)", median_p99(times)),
        ]
        if load.errors:
            print(f"  first load errors: {load.errors[:3]}")


def _rps_worker(
    amp: namespaces.Amphora,
    start_at: float,
    seconds: float,
    queue: multiprocessing.queues.Queue[tuple[int, int]],
) -> None:
    """One client process: its own connection, ``GET /1.0/info`` in a loop for ``seconds``."""
    done = failed = 0
    try:
        client = AgentClient(amp)
        client.expect("GET", "/1.0/info", 200)
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + seconds
        while time.time() < end:
            try:
                status = client.request("GET", "/1.0/info")[0]
            except OSError:
                status = 0
            done, failed = (done + 1, failed) if status == 200 else (done, failed + 1)
    finally:
        queue.put((done, failed))


def measure(amp: namespaces.Amphora, members: namespaces.Backends) -> list[Figure]:
    """Every core figure, in an order where the memory figures come first."""
    start_serving(amp, members)
    bench = CoreBench(amp)
    time.sleep(1.0)
    idle = bench.rss()
    step("load balancer with 10 listeners")
    bench.create_lb()
    step(f"{N_MIXED} mixed requests")
    bench.mixed()
    after = bench.rss()
    anon, shared = (proc_status(bench.pid, key) / 1024 for key in ("RssAnon", "RssFile"))
    agents = 1 + sum(
        b"amphora_agent" in Path(f"/proc/{c}/cmdline").read_bytes()
        for c in child_pids(bench.pid)
        if Path(f"/proc/{c}/cmdline").exists()
    )
    bench.figures += [
        Figure("Agent RSS idle (just started)", f"{idle:.1f} MiB"),
        Figure(
            f"Agent RSS after {N_MIXED} mixed requests",
            f"{after:.1f} MiB in {agents} process(es) (anon {anon:.1f}, file {shared:.1f})",
            "<= 50 MiB, 1 process",
            "379 MiB, 4 processes",
            after <= 50 and agents == 1,
        ),
    ]
    step("latency over one kept-alive connection")
    bench.latencies()
    step("throughput with 8 clients")
    bench.throughput()
    step("config changes")
    bench.config_changes()
    step("50 reloads under load")
    bench.reloads_under_load()
    peak = proc_status(bench.pid, "VmHWM") / 1024
    bench.figures.append(Figure("Agent RSS at the end / peak", f"{bench.rss():.1f} / {peak:.1f} MiB"))
    if bench.api.reconnects:
        print(f"  note: the API connection was re-opened {bench.api.reconnects} time(s)")
    bench.api.close()
    return bench.figures


def step(text: str) -> None:
    """Progress, so a long run shows what it is doing."""
    print(f"  measuring: {text} ...", flush=True)


def main() -> int:
    """Run the core benchmark in a private namespace and print the figures beside their targets."""
    problem = preflight()
    if problem:
        print(f"core bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    print(f"core bench: agent, API and haproxy lifecycle ({loadavg()} at start)", flush=True)
    with lab_amphora("ampbench") as (amp, members):
        figures = measure(amp, members)
    print_figures(
        "core: agent and haproxy lifecycle",
        figures,
        f"{loadavg()} at the end; latencies are client-observed over one mTLS keep-alive connection",
    )
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

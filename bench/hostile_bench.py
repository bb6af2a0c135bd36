"""Hostile clients (issue 11): memory without a certificate, deadlines, uploads, the agent's folders.

``python -m bench hostile`` (``python -m bench.hostile_bench --seconds 60 --silent 5000 --slow 500``),
about 4 minutes. Needs root: it moves itself into a private network namespace and runs a real agent
and haproxy in namespaces of their own (``lab``); the attackers are a process of their own
(``bench.attackers``).

1. **hold**: 5,000 silent TCP connections plus 500 TLS connections (valid certificate) sending their
   headers one byte every 2 s, kept up for 60 s (each reopened a second after the agent closes it),
   against the agent's default settings. The agent's RSS throughout; a controller's ``GET /1.0/info``
   on a new connection every 0.2 s meanwhile; the RSS 30 s after the attack, beside the idle figure.
2. **deadlines** (``agent_request_read_timeout = 20``): how long an idle connection after its
   handshake, a connection that never shakes hands, headers and a body sent one byte at a time live.
3. **uploads**: 20 concurrent config uploads at the size limit, then 20 of 60 MiB: peak RSS, answers.
4. **content** (the other half of issue 11, ``bench.content_bench``): the PUT of the controller's TLS
   fixture beside ``haproxy -c`` of the HTTP one, and its decoy run; and a decoy folder of this
   benchmark snapshotted across the whole run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amphora_agent.api import MAX_UPLOAD
from bench.attackers import Attack, Target, closes, trickle
from bench.common import (
    Figure,
    lab_amphora,
    loadavg,
    median_p99,
    ms,
    print_figures,
    proc_status,
    roomy_client_ports,
    start_serving,
)
from bench.content_bench import GNU_TIME, ContentBench
from lab import namespaces
from lab.configs import CONTROLLER_FIXTURES
from lab.decoy import Decoy
from lab.namespaces import preflight

SINGLE = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
DEADLINE_READ_TIMEOUT = 20
PROBE_EVERY = 0.2
N_UPLOADS = 20
OVER_LIMIT = 60 << 20


class Sampler:
    """The agent's RSS every 0.25 s in a thread: the highest figure seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.series: list[tuple[float, float]] = []  # (seconds since the start, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.25):
            rss = proc_status(self.pid, "VmRSS") / 1024
            self.series.append((time.monotonic() - started, rss))
            self.peak = max(self.peak, rss)

    def __enter__(self) -> Sampler:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM counts from now on
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, proc_status(self.pid, "VmHWM") / 1024)


class HostileBench:
    """One serving amphora, attacked phase by phase."""

    def __init__(self, amp: namespaces.Amphora, args: argparse.Namespace) -> None:
        self.amp = amp
        self.args = args
        self.figures: list[Figure] = []

    @property
    def pid(self) -> int:
        """The agent's pid (``nsenter`` execs it)."""
        assert self.amp.process is not None
        return self.amp.process.pid

    def rss(self) -> float:
        """The agent's RSS in MiB."""
        return proc_status(self.pid, "VmRSS") / 1024

    def restart(self, **options: str) -> None:
        """Start the agent again with these ``[amphora_agent]`` options (the defaults otherwise)."""
        self.amp.stop_agent()
        self.amp.extra_config = {"amphora_agent": dict(options)}
        self.amp.write_config()
        self.amp.start_agent()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request on a new connection."""
        conn = self.amp.https(timeout=60)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def warm_up(self) -> float:
        """A working agent: a config stored and started, reads; then its settled RSS."""
        config = render(self.amp, "single-http.cfg")
        assert (
            self.request("PUT", f"/1.0/loadbalancer/{self.amp.amphora_id}/{SINGLE}/haproxy", config)[0] == 202
        )
        assert self.request("PUT", f"/1.0/loadbalancer/{SINGLE}/reload")[0] == 202
        for path in ("/1.0/info", "/1.0/details", "/1.0/listeners") * 30:
            self.request("GET", path)
        time.sleep(5)
        return self.rss()

    # -- 1. hold ------------------------------------------------------------------------------------
    def hold(self) -> None:
        """Silent and slow connections for ``--seconds``; the controller's requests meanwhile."""
        idle = self.warm_up()
        target = Target(self.amp.mgmt_ip, 9443, self.amp.ssl_context(), self.amp.amphora_id)
        attack = Attack(target, self.args.silent, self.args.slow, self.args.seconds)
        latencies: list[float] = []
        failures: list[str] = []
        held = 0
        with Sampler(self.pid) as sampler:
            attack.start()
            while time.monotonic() - attack.started < self.args.seconds:
                started = time.perf_counter()
                try:
                    status, _ = self.request("GET", "/1.0/info")
                    failure = None if status == 200 else f"status {status}"
                except OSError as exc:
                    failure = repr(exc)
                latencies.append(time.perf_counter() - started)
                if failure is not None:
                    failures.append(failure)
                held = max(held, agent_connections(self.amp))
                time.sleep(max(PROBE_EVERY - latencies[-1], 0))
            tallies = attack.result()
        closed_at = time.monotonic()
        time.sleep(max(self.args.settle - (time.monotonic() - closed_at), 0))
        after = self.rss()
        silent, slow = tallies["silent"], tallies["slow"]
        median = statistics.median(latencies)
        self.figures += [
            Figure("agent RSS idle (after warm-up, before the attack)", f"{idle:.1f} MiB"),
            Figure(
                f"agent RSS during {self.args.silent:,} silent + {self.args.slow} slow TLS connections, "
                f"{self.args.seconds:.0f} s (peak)",
                f"{sampler.peak:.1f} MiB",
                "<= 80 MiB",
                "657 MiB at 2,000 silent",
                sampler.peak <= 80,
            ),
            Figure(
                "  attackers: silent opened / closed by the agent / open at most",
                f"{silent['opened']:,} / {silent['closed_by_agent']:,} / {silent['peak_open']:,}",
            ),
            Figure(
                "  attackers: slow TLS opened / closed by the agent / open at most",
                f"{slow['opened']:,} / {slow['closed_by_agent']:,} / {slow['peak_open']:,}",
            ),
            Figure("  connections the agent held at most (established on :9443)", f"{held:,}"),
            Figure(
                f"controller GET /1.0/info meanwhile, new connection each, median / p99 ({len(latencies)}x)",
                f"{median_p99(latencies)}, {len(failures)} failed"
                + (f" ({failures[0]})" if failures else ""),
                "median <= 50 ms, 0 failed",
                "-",
                median <= 0.050 and not failures,
            ),
            Figure(
                f"agent RSS {self.args.settle:.0f} s after the attack",
                f"{after:.1f} MiB ({(after / idle - 1) * 100:+.1f} % of idle)",
                f"<= idle + 15 % = {idle * 1.15:.1f} MiB",
                "660 MiB (not given back)",
                after <= idle * 1.15,
            ),
        ]

    # -- 2. deadlines --------------------------------------------------------------------------------
    def deadlines(self) -> None:
        """Each kind of dawdling client, at once, against ``agent_request_read_timeout = 20``."""
        self.restart(agent_request_read_timeout=str(DEADLINE_READ_TIMEOUT))
        limit = DEADLINE_READ_TIMEOUT + 5
        before = {  # what the issue saw with agent_request_read_timeout = 5
            "idle after the handshake": "open after 120 s",
            "never starts the handshake": "-",
            "headers one byte every 2 s": "open after 120 s",
            "a body one byte every 0.5 s": "202 after 30 s",
        }
        probes: dict[str, Callable[[], tuple[float | None, str]]] = {
            "idle after the handshake": lambda: closes(self.amp.tls_socket(), 60),
            "never starts the handshake": lambda: closes(
                socket.create_connection((self.amp.mgmt_ip, 9443), timeout=10), 60
            ),
            "headers one byte every 2 s": lambda: trickle(self.amp, SINGLE, headers_only=True, every=2.0),
            "a body one byte every 0.5 s": lambda: trickle(self.amp, SINGLE, headers_only=False, every=0.5),
        }
        results: dict[str, tuple[float | None, str]] = {}
        threads = [
            threading.Thread(target=lambda n=name, p=probe: results.__setitem__(n, p()))
            for name, probe in probes.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        for name, (took, how) in results.items():
            bound = 30 if name.startswith("never") else limit
            self.figures.append(
                Figure(
                    f"{name}: closed after",
                    f"{took:.1f} s ({how})" if took is not None else f"still open ({how})",
                    f"<= {bound} s" + (" (408 or a close, never a 2xx)" if "one byte" in name else ""),
                    before[name],
                    took is not None and took <= bound and not how.startswith("HTTP/1.1 2"),
                )
            )
        self.restart()

    # -- 3. uploads ----------------------------------------------------------------------------------
    def uploads(self) -> None:
        """20 concurrent uploads at the limit (the controller's config of each load balancer, padded
        with comments), then 20 of 60 MiB."""
        config = render(self.amp, "single-http.cfg")
        pad = b"# padding up to the upload limit\n"
        ids = [f"0b5e5b51-0000-4000-8000-0000000000{i:02d}" for i in range(N_UPLOADS)]
        at_limit = {lb: config.replace(SINGLE.encode(), lb.encode()) for lb in ids}
        at_limit = {lb: body + pad * ((MAX_UPLOAD - len(body)) // len(pad)) for lb, body in at_limit.items()}
        over = dict.fromkeys(ids, b"#" * OVER_LIMIT)
        for bodies, label, want in ((at_limit, "at the limit (16 MiB)", 202), (over, "of 60 MiB", 413)):
            answers, peak, wall = self.concurrent_puts(bodies)
            statuses = sorted({status for status, _ in answers})
            readable = sum(1 for status, data in answers if status == 413 and _json(data).get("message"))
            self.figures.append(
                Figure(
                    f"{N_UPLOADS} concurrent uploads {label}: agent peak RSS",
                    f"{peak:.1f} MiB; answers {statuses} in {ms(wall)}"
                    + (f", {readable} JSON 413 read by the client" if want == 413 else ""),
                    "<= 100 MiB" + (", every client reads a JSON 413" if want == 413 else ", all 202"),
                    "closed mid-upload, no 413" if want == 413 else "983 MiB peak, 244 MiB stayed",
                    peak <= 100
                    and len(answers) == N_UPLOADS
                    and statuses == [want]
                    and (want != 413 or readable == N_UPLOADS),
                )
            )
        for lb in ids:
            self.request("DELETE", f"/1.0/listeners/{lb}")

    def concurrent_puts(self, bodies: dict[str, bytes]) -> tuple[list[tuple[int, bytes]], float, float]:
        """Each body uploaded as its load balancer's config, all at once: answers, peak RSS, seconds."""
        puts = [
            (f"/1.0/loadbalancer/{self.amp.amphora_id}/{lb}/haproxy", body) for lb, body in bodies.items()
        ]
        with Sampler(self.pid) as sampler, concurrent.futures.ThreadPoolExecutor(len(puts)) as pool:
            started = time.perf_counter()
            answers = list(pool.map(lambda put: self.request("PUT", *put), puts))
            wall = time.perf_counter() - started
        return answers, sampler.peak, wall

    # -- 4. content --------------------------------------------------------------------------------
    def content(self) -> None:
        """The content half's own measurements (``bench.content_bench``): the TLS fixture's PUT beside
        ``haproxy -c`` of the HTTP one, its check's memory, and the decoy run."""
        bench = ContentBench(self.amp)
        bench.check_cost()
        bench.hostile()
        bench.api.close()
        self.figures += bench.figures


def render(amp: namespaces.Amphora, name: str) -> bytes:
    """A controller haproxy config with this amphora's folders."""
    text = (CONTROLLER_FIXTURES / "haproxy" / name).read_text()
    text = text.replace("/var/lib/octavia/certs", str(amp.base / "certs"))
    return text.replace("/var/lib/octavia", str(amp.base)).encode()


def _json(data: bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        value = json.loads(data)
        if isinstance(value, dict):
            return value
    return {}


def agent_connections(amp: namespaces.Amphora) -> int:
    """Established TCP connections on the agent's port, seen from the amphora's namespace."""
    out = namespaces.sh(
        "ss", "-Htn", "state", "established", "( sport = :9443 )", netns=amp.name, check=False
    )
    return len(out.splitlines())


def main(argv: list[str] | None = None) -> int:
    """Run every phase; 1 when a target is missed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the hold (default 60)")
    parser.add_argument("--silent", type=int, default=5000, help="silent TCP connections (default 5000)")
    parser.add_argument("--slow", type=int, default=500, help="slow TLS connections (default 500)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before the RSS after (30)")
    args = parser.parse_args(argv)
    problem = preflight() or (
        None if os.access(GNU_TIME, os.X_OK) else f"{GNU_TIME} is missing (apt install time)"
    )
    if problem:
        print(f"hostile bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    roomy_client_ports()
    print(f"hostile bench: issue 11 ({loadavg()} at start)", flush=True)
    with lab_amphora("amphostile") as (amp, members):
        decoy = Decoy(amp.workdir / "decoy-run")
        start_serving(amp, members)
        bench = HostileBench(amp, args)
        for phase in (bench.hold, bench.deadlines, bench.uploads, bench.content):
            print(f"  phase: {phase.__name__} ...", flush=True)
            phase()
        changes = decoy.changes()
        bench.figures.append(
            Figure(
                "files created, changed or deleted in this run's own decoy folder (all phases)",
                str(len(changes)) + (f": {', '.join(changes[:3])}" if changes else ""),
                "0",
                "-",
                not changes,
            )
        )
    print_figures(
        "hostile: memory, deadlines, uploads, the agent's folders", bench.figures, f"{loadavg()} at the end"
    )
    missed = [f.name for f in bench.figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

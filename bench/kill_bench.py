"""Kills: SIGKILL the agent at random points of config, certificate and agent-config uploads, many times.

``python -m bench kill`` (``--kills N``, 100 by default; about 1.5 s per kill). Needs root: it moves
itself into a private network namespace and runs a real agent and haproxy in namespaces of its own.

Each round uploads, at once, a padded haproxy config (0.1-2 MB), a tenant PEM and the agent's own
config file, kills the agent with SIGKILL after a random delay (0-150 ms: before, during or after the
writes), and checks every stored file: it must be the old or the new upload, byte for byte, never a
mix or a truncation. Then it starts the agent again, which must answer and remove the temp files the
killed writes left. A running load balancer serves traffic the whole time: the agent's death must
not cost a single tenant request.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

from bench.common import (
    TWO_MEMBERS,
    Figure,
    lab_amphora,
    loadavg,
    median_p99,
    print_figures,
    roomy_client_ports,
    start_serving,
)
from lab import namespaces
from lab.configs import VIP, Listener, Load, fixed_id, render_config
from lab.namespaces import preflight

LB_ID = fixed_id("bench/kill-loadbalancer")
MEMBERS = TWO_MEMBERS
LISTENERS = (Listener("kill-http", "HTTP", 80, MEMBERS),)
DEFAULT_KILLS = 100
SEED = 7


def md5(data: bytes) -> str:
    """Hex md5."""
    return hashlib.md5(data).hexdigest()


def upload(amp: namespaces.Amphora, url: str, body: bytes, interrupted: list[str]) -> None:
    """PUT ``body``; a request the kill cut off is recorded."""
    try:
        with amp.client() as api:
            api.put(url, content=body).raise_for_status()
    except httpx.HTTPError:
        interrupted.append(url)


def temps(amp: namespaces.Amphora) -> list[Path]:
    """Temp files of interrupted writes anywhere in the amphora's folders."""
    return sorted(amp.workdir.rglob(".*.tmp-*"))


class KillBench:
    """One amphora serving a load balancer; the agent killed over and over in the middle of uploads."""

    def __init__(self, amp: namespaces.Amphora, rng: random.Random) -> None:
        self.amp = amp
        self.rng = rng
        self.config = render_config(LB_ID, VIP, LISTENERS, amp.base)
        self.pem = amp.ca.issue("www.example.com", server=True).bundle
        self.urls = {
            "haproxy.cfg": f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy",
            "tenant PEM": f"/1.0/loadbalancer/{LB_ID}/certificates/www.pem",
            "agent config": "/1.0/config",
        }
        self.paths = {
            "haproxy.cfg": amp.base / LB_ID / "haproxy.cfg",
            "tenant PEM": amp.base / "certs" / LB_ID / "www.pem",
            "agent config": amp.config_file,
        }
        self.known: dict[str, set[str]] = {}
        self.partial: list[str] = []
        self.mid_upload = 0
        self.temps_left = 0
        self.temps_after_start = 0
        self.restarts: list[float] = []

    def setup(self) -> None:
        """The load balancer running, and the first version of every file stored."""
        with self.amp.client() as api:
            api.put(self.urls["haproxy.cfg"], content=self.config).raise_for_status()
            api.put(f"/1.0/loadbalancer/{LB_ID}/reload").raise_for_status()
            api.put(self.urls["tenant PEM"], content=self.pem).raise_for_status()
        self.known = {name: {md5(path.read_bytes())} for name, path in self.paths.items()}

    def bodies(self, round_: int) -> dict[str, bytes]:
        """This round's uploads: valid, and padded to a random size so the writes take a while."""
        padding = b"#" + b"p" * self.rng.randrange(100_000, 2_000_000) + b"\n"
        return {
            "haproxy.cfg": self.config + b"\n" + padding,
            "tenant PEM": padding + self.pem,  # text before the PEM blocks is allowed
            "agent config": self.amp.config_file.read_bytes().split(b"\n# round", 1)[0]
            + f"\n# round {round_}\n".encode()
            + padding,
        }

    def round(self, round_: int) -> None:
        """Upload all three at once, kill the agent at a random moment, check, start it again."""
        bodies = self.bodies(round_)
        for name, body in bodies.items():
            self.known[name].add(md5(body))
        interrupted: list[str] = []
        threads = [
            threading.Thread(target=upload, args=(self.amp, self.urls[name], body, interrupted))
            for name, body in bodies.items()
        ]
        for thread in threads:
            thread.start()
        time.sleep(self.rng.uniform(0.0, 0.15))
        self.amp.stop_agent(signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        self.mid_upload += bool(interrupted)
        for name, path in self.paths.items():
            if md5(path.read_bytes()) not in self.known[name]:
                self.partial.append(f"{name} after kill {round_}")
        self.temps_left += len(temps(self.amp))
        started = time.perf_counter()
        self.amp.start_agent()
        self.restarts.append(time.perf_counter() - started)
        self.temps_after_start += len(temps(self.amp))
        with self.amp.client() as api:
            stored = api.get(f"/1.0/loadbalancer/{LB_ID}/haproxy")
            if stored.status_code != 200 or md5(stored.content) != md5(
                self.paths["haproxy.cfg"].read_bytes()
            ):
                self.partial.append(f"haproxy.cfg as the agent reads it after kill {round_}")


def run(amp: namespaces.Amphora, members: namespaces.Backends, kills: int) -> list[Figure]:
    """Set up, kill ``kills`` times under traffic, and return the figures."""
    start_serving(amp, members)
    bench = KillBench(amp, random.Random(SEED))
    bench.setup()
    began = time.monotonic()
    with Load(VIP, 80, threads=2, max_seconds=kills * 10 + 60) as load:
        for round_ in range(kills):
            bench.round(round_)
            if (round_ + 1) % 20 == 0:
                print(f"  {round_ + 1} kills ...", flush=True)
    elapsed = time.monotonic() - began
    return [
        Figure(
            "Stored files partial after a kill (haproxy.cfg, tenant PEM, agent config)",
            f"{len(bench.partial)} across {kills} kills ({bench.mid_upload} mid-upload)",
            f"0 across >= {DEFAULT_KILLS} kills",
            "-",
            not bench.partial and kills >= DEFAULT_KILLS,
        ),
        Figure("  temp files the kills left (removed at the next start)", str(bench.temps_left)),
        Figure(
            "Temp files left after the agent started again",
            str(bench.temps_after_start),
            "0",
            "-",
            bench.temps_after_start == 0,
        ),
        Figure("Agent start until it answers, median / p99", median_p99(bench.restarts)),
        Figure(
            "Failed tenant requests while the agent was killed",
            f"{load.failed} of {load.ok + load.failed}",
            "0",
            "-",
            load.failed == 0 and load.ok > 0,
        ),
        Figure("  whole run", f"{elapsed:.0f} s ({statistics.mean(bench.restarts):.2f} s per restart)"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the kill benchmark in a private namespace; 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench kill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS, help="how many times to kill the agent")
    args = parser.parse_args(argv)
    problem = preflight()
    if problem:
        print(f"kill bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    roomy_client_ports()  # a new connection per request for minutes
    print(f"kill bench: {args.kills} SIGKILLs of the agent mid-upload ({loadavg()} at start)", flush=True)
    with lab_amphora("ampkill") as (amp, members):
        figures = run(amp, members, args.kills)
    print_figures("kill: SIGKILL mid-upload", figures, f"{loadavg()} at the end")
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Content hardening: what a config check costs, and that nothing outside the agent's folders changes.

``python -m bench content``. Needs root: it moves itself into a private network namespace and runs a
real agent and haproxy in namespaces of their own (``lab``).

* ``PUT .../haproxy`` of the controller's multi-listener fixture (TERMINATED_HTTPS, its real
  ``tune.ssl.cachesize 1085440``) over kept-alive mTLS, beside ``haproxy -c`` of the HTTP-only
  fixture alone, in pairs; the peak memory of the agent's check of the TLS fixture (``wait4``) beside
  the same check without the agent's ``tune.ssl.cachesize 0`` file (what the existing agent pays);
  concurrent PUTs of that fixture for different load balancers.
* A hostile run against a decoy folder outside the agent's folders: configs naming files in it,
  links to it planted inside the agent's folders, uploads, reloads and deletes through them; then
  the decoy is compared with its snapshot.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from amphora_agent.system import haproxy
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
    start_serving,
)
from lab import namespaces
from lab.configs import VIP, fixed_id
from lab.decoy import Decoy
from lab.namespaces import preflight

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "controller"
MULTI = "1255f924-18da-44a0-aad7-23512f2c0594"
SINGLE = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
N_PAIRS = 30
N_CONCURRENT = 8
N_RSS = 5
GNU_TIME = "/usr/bin/time"  # Debian's "time" package


class ContentBench:
    """One serving amphora, its API client and the figures."""

    def __init__(self, amp: namespaces.Amphora) -> None:
        self.amp = amp
        self.api = AgentClient(amp)
        self.figures: list[Figure] = []
        assert amp.process is not None
        self.pid = amp.process.pid

    def render(self, text: str) -> str:
        """A controller file with this amphora's folders."""
        certs = str(self.amp.base / "certs")
        return text.replace("/var/lib/octavia/certs", certs).replace("/var/lib/octavia", str(self.amp.base))

    def fixture(self, name: str) -> bytes:
        """A controller haproxy config with this amphora's folders."""
        return self.render((FIXTURES / "haproxy" / name).read_text()).encode()

    def upload_certificates(self, lb_id: str, source: str = MULTI) -> None:
        """The multi LB's certificates, uploaded as the controller does (crt-list paths rendered)."""
        for pem in sorted((FIXTURES / "certs" / source).iterdir()):
            body = self.render(pem.read_text()).replace(source, lb_id).encode()
            self.api.expect("PUT", f"/1.0/loadbalancer/{lb_id}/certificates/{pem.name}", 200, body)

    # -- item 7: the check ------------------------------------------------------------------------
    def check_alone(self, argv: list[str]) -> float:
        """Seconds of one ``haproxy -c`` that must accept its config."""
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} refused: {done.stdout.decode()[-500:]}")
        return time.perf_counter() - started

    def peak_kib(self, argv: list[str]) -> tuple[float, int]:
        """Seconds and peak RSS (KiB) of one check; it must accept the config.

        Measured by GNU time around it: a process's ``ru_maxrss`` starts at the RSS of the process
        that forked it (this Python process, about 45 MiB), GNU time's child starts small.
        """
        report = self.amp.workdir / "time.out"
        started = time.perf_counter()
        done = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", str(report), *argv], capture_output=True, check=False
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"check failed: {argv}: {done.stdout.decode()[-500:]}")
        return elapsed, int(report.read_text().split()[-1])

    def instance(self) -> haproxy.Instance:
        """The multi LB's haproxy as the agent checks it (the stored config, the agent's files)."""
        base = self.amp.base
        return haproxy.Instance(
            cmd=Path("/usr/sbin/haproxy"),
            config=base / MULTI / "haproxy.cfg",
            user_group=base / "haproxy-default-user-group.conf",
            pid_file=base / MULTI / f"{MULTI}.pid",
            master_socket=base / MULTI / "master.sock",
            peer_name="x",
            netns=None,
        )

    def check_cost(self) -> None:
        """PUT of the TLS fixture beside haproxy -c of the HTTP one (and beside the agent's own check of
        the TLS one: what haproxy itself needs for TLS); the check's peak memory."""
        self.upload_certificates(MULTI)
        http_only = self.amp.workdir / "single-http.cfg"
        http_only.write_bytes(self.fixture("single-http.cfg"))
        body = self.fixture("multi-listener.cfg")
        url = f"/1.0/loadbalancer/{self.amp.amphora_id}/{MULTI}/haproxy"
        self.api.expect("PUT", url, 202, body)  # warm, and the stored config the checks below use
        tuning = self.amp.base / "haproxy-check-tuning.conf"
        own_check = haproxy.check_argv(self.instance(), tuning=tuning)
        checks, tls_checks, puts, cpu = [], [], [], 0.0
        for _ in range(N_PAIRS):
            checks.append(self.check_alone(["haproxy", "-c", "-f", str(http_only)]))
            tls_checks.append(self.check_alone(own_check))
            before = cpu_seconds(self.pid)
            puts.append(self.api.timed("PUT", url, 202, body))
            cpu += cpu_seconds(self.pid) - before
        target = statistics.median(checks) + 0.015
        overhead = statistics.median(p - c for p, c in zip(puts, tls_checks, strict=True))
        self.figures += [
            Figure(
                f"PUT .../haproxy, multi-listener TLS fixture, median / p99 ({N_PAIRS}x)",
                f"{median_p99(puts)} (agent CPU {ms(cpu / N_PAIRS)}/req)",
                f"median <= haproxy -c of the HTTP fixture + 15 ms = {ms(target)}",
                "273-293 ms",
                statistics.median(puts) <= target,
            ),
            Figure("  haproxy -c of the HTTP-only fixture alone, same run", median_p99(checks)),
            Figure("  the agent's haproxy -c of the TLS fixture alone, same run", median_p99(tls_checks)),
            Figure(
                "  PUT minus that check, median of triples (the agent's own cost)",
                ms(overhead),
                "<= 15 ms",
                "-",
                overhead <= 0.015,
            ),
        ]
        tuned = [self.peak_kib(own_check) for _ in range(N_RSS)]
        plain = [self.peak_kib(haproxy.check_argv(self.instance())) for _ in range(N_RSS)]
        tuned_mib = max(kib for _, kib in tuned) / 1024
        self.figures += [
            Figure(
                "  the agent's check of it: peak RSS (max of 5) / median time",
                f"{tuned_mib:.1f} MiB / {ms(statistics.median(t for t, _ in tuned))}",
                "<= 30 MiB",
                "278 MiB",
                tuned_mib <= 30,
            ),
            Figure(
                "  the same check allocating the session cache",
                f"{max(kib for _, kib in plain) / 1024:.0f} MiB / "
                f"{ms(statistics.median(t for t, _ in plain))}",
            ),
        ]

    def concurrent_puts(self) -> None:
        """8 load balancers' TLS configs uploaded at once (at most 2 checks run together)."""
        ids = [fixed_id(f"bench/content/{i}") for i in range(N_CONCURRENT)]
        bodies = {}
        for lb_id in ids:
            self.upload_certificates(lb_id)
            bodies[lb_id] = self.fixture("multi-listener.cfg").replace(MULTI.encode(), lb_id.encode())
        before = proc_status(self.pid, "VmHWM")

        def put(lb_id: str) -> float:
            client = AgentClient(self.amp)
            try:
                return client.timed(
                    "PUT", f"/1.0/loadbalancer/{self.amp.amphora_id}/{lb_id}/haproxy", 202, bodies[lb_id]
                )
            finally:
                client.close()

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(N_CONCURRENT) as pool:
            times = list(pool.map(put, ids))
        wall = time.perf_counter() - started
        self.figures.append(
            Figure(
                f"{N_CONCURRENT} concurrent TLS PUTs (different load balancers): wall / slowest",
                f"{ms(wall)} / {ms(max(times))}, all 202; agent peak RSS "
                f"{proc_status(self.pid, 'VmHWM') / 1024:.1f} MiB (was {before / 1024:.1f})",
            )
        )
        for lb_id in ids:
            self.api.expect("DELETE", f"/1.0/listeners/{lb_id}", 200)

    # -- item 4: the decoy ------------------------------------------------------------------------
    def hostile(self) -> None:
        """Every way an upload or a planted link could reach outside; the decoy must not change."""
        decoy = Decoy(self.amp.workdir / "decoy")
        amp, base = self.amp, self.amp.base
        put_url = f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE}/haproxy"
        good = self.fixture("single-http.cfg").decode()
        own_socket, own_state = f"{base}/{SINGLE}.sock", f"{base}/{SINGLE}/servers-state"
        victim, state = decoy.path("victim"), decoy.path("servers-state")
        refused = [
            good.replace(own_socket, str(victim)),
            good.replace(own_state, str(state)),
            good + f"\nring evil\n    size 32768\n    backing-file {victim}\n",
            good.replace("global\n", f"global\n    lua-load {victim}\n", 1),
            good.replace("global\n", f'global\n    "lua-"load {victim}\n', 1),
            good.replace("global\n", f"global\n    unix-bind prefix {decoy.root}\n", 1),
            good.replace("    bind 198.51.100.10:80", f"    bind {decoy.root}/fe.sock"),
            good + "\nprogram evil\n    command /bin/true\n",
        ]
        answers = [self.api.request("PUT", put_url, body.encode())[0] for body in refused]
        # a running load balancer whose stored config (an older agent's) names the decoy's files
        self.api.expect("PUT", put_url, 202, good.encode())
        self.api.expect("PUT", f"/1.0/loadbalancer/{SINGLE}/reload", 202)
        (base / SINGLE / "haproxy.cfg").write_text(
            good.replace(own_state, str(state)).replace(own_socket, str(victim))
        )
        answers.append(self.api.request("PUT", f"/1.0/loadbalancer/{SINGLE}/reload")[0])  # refused: 500
        self.api.expect("DELETE", f"/1.0/listeners/{SINGLE}", 200)
        # links planted inside the agent's folders
        linked_lb, linked_certs = fixed_id("bench/content/linked-lb"), fixed_id("bench/content/linked-certs")
        os.symlink(decoy.path("sub"), base / linked_lb)
        os.symlink(decoy.path("sub"), base / "certs" / linked_certs)
        cert_url = f"/1.0/loadbalancer/{linked_certs}/certificates"
        pem = (amp.certs / "server.pem").read_bytes()
        answers += [
            self.api.request("PUT", f"{cert_url}/www.pem", pem)[0],
            self.api.request("GET", f"{cert_url}/www.pem")[0],
            self.api.request("DELETE", f"{cert_url}/www.pem")[0],
            self.api.request("PUT", f"/1.0/loadbalancer/{amp.amphora_id}/{linked_lb}/haproxy", good.encode())[
                0
            ],
            self.api.request("PUT", f"/1.0/loadbalancer/{linked_lb}/reload")[0],
            self.api.request("DELETE", f"/1.0/listeners/{linked_lb}")[0],
            self.api.request("DELETE", f"/1.0/listeners/{linked_certs}")[0],
        ]
        changes = decoy.changes()
        self.figures.append(
            Figure(
                f"files created, changed or deleted in the decoy ({len(answers)} hostile requests)",
                f"{len(changes)}" + (f": {', '.join(changes[:3])}" if changes else ""),
                "0",
                "state file and stats socket written/deleted anywhere; links followed",
                not changes,
            )
        )
        print(f"  hostile answers: {answers}", flush=True)


def measure(amp: namespaces.Amphora, members: namespaces.Backends) -> list[Figure]:
    """Every figure of the content benchmark."""
    start_serving(amp, members)
    bench = ContentBench(amp)
    print("  measuring: PUT of the TLS fixture and the check's memory ...", flush=True)
    bench.check_cost()
    print("  measuring: concurrent TLS PUTs ...", flush=True)
    bench.concurrent_puts()
    print("  measuring: the hostile run against the decoy ...", flush=True)
    bench.hostile()
    bench.figures.append(
        Figure(
            "agent RSS at the end / peak",
            f"{proc_status(bench.pid, 'VmRSS') / 1024:.1f} / "
            f"{proc_status(bench.pid, 'VmHWM') / 1024:.1f} MiB",
        )
    )
    bench.api.close()
    return bench.figures


def main() -> int:
    """Run the content benchmark in a private namespace; 1 when a target is missed."""
    problem = preflight() or (
        None if os.access(GNU_TIME, os.X_OK) else f"{GNU_TIME} is missing (apt install time)"
    )
    if problem:
        print(f"content bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    print(
        f"content bench: config checks and the agent's folders ({loadavg()} at start); VIP {VIP}", flush=True
    )
    with lab_amphora("ampcontent") as (amp, members):
        figures = measure(amp, members)
    print_figures("content: config checks and the agent's folders", figures, f"{loadavg()} at the end")
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())

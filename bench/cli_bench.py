"""amphoractl start-up: median wall time of ``amphoractl info`` beside ``python -c pass``.

``python -m bench cli``. Needs root: it moves itself into a private network namespace and runs a real
agent in an amphora namespace (``lab``). Every run is a new process, as an operator types it.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, ms, print_figures
from lab import namespaces

RUNS = 15
TARGET = 0.400  # seconds, median of `amphoractl info`


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run, start to exit; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return took, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def medians(argv: list[str], env: dict[str, str], runs: int = RUNS) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` runs, after one untimed warm-up run (page cache)."""
    timed(argv, env)
    samples = [timed(argv, env) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def shown(figures: tuple[float, float]) -> str:
    """``241 ms (cpu 180 ms)``: the CPU figure does not depend on what else the machine runs."""
    return f"{ms(figures[0])} (cpu {ms(figures[1])})"


def ctl_env(amp: namespaces.Amphora) -> dict[str, str]:
    """The environment an operator would export for this amphora."""
    return {
        **os.environ,
        "AMPHORA_URL": amp.url,
        "AMPHORA_ID": amp.amphora_id,
        "AMPHORA_CA": str(amp.certs / "client_ca.pem"),
        "AMPHORA_CLIENT_CERT": str(amp.certs / "client.pem"),
    }


def main() -> int:
    """Measure and print the figures; 1 when the target was missed."""
    if os.geteuid() != 0:
        print("cli_bench: needs root (network namespaces)")
        return 1
    namespaces.isolate()
    load = os.getloadavg()[0]
    amphoractl = str(Path(sys.executable).with_name("amphoractl"))
    with tempfile.TemporaryDirectory(prefix="amp") as tmp:
        amp = namespaces.Amphora(Path(tmp)).create()
        try:
            amp.start_agent()
            env = ctl_env(amp)
            python = medians([sys.executable, "-c", "pass"], env)
            version = medians([amphoractl, "--version"], env)
            info = medians([amphoractl, "info"], env)
            info_json = medians([amphoractl, "--json", "info"], env)
        finally:
            amp.destroy()
    print_figures(
        f"amphoractl start-up (median of {RUNS} runs, each a new process)",
        [
            Figure("python -c pass", shown(python)),
            Figure("amphoractl --version (no request)", shown(version)),
            Figure("amphoractl info (mTLS, table)", shown(info), f"<= {ms(TARGET)}", met=info[0] <= TARGET),
            Figure(
                "amphoractl --json info", shown(info_json), f"<= {ms(TARGET)}", met=info_json[0] <= TARGET
            ),
        ],
        note=f"load average at the start: {load:.1f} (wall times grow with it, CPU times much less)",
    )
    return 0 if info[0] <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

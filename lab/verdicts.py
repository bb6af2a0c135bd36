"""Whether the SSL session cache changes a verdict of ``haproxy -c``: the agent checks every config with
a last ``-f`` that sets ``tune.ssl.cachesize 0``; this runs the same check without that file too.

Used by the corpus test (tests/integration/test_check_verdicts.py) and by the wrapper
``scripts/haproxy_check_twice.py``, which a whole test run can use as ``haproxy_cmd`` so that every
check of every test is run both ways (``AMPHORA_HAPROXY_CMD``, see bench/README.md).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

TUNING_NAME = "haproxy-check-tuning.conf"
_PID = re.compile(r"^\[(\w+)\]\s+\(\d+\) : ")


@dataclass(frozen=True)
class Verdict:
    """What a check decided: its exit code and its ALERT lines (pids left out)."""

    code: int
    alerts: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        """haproxy -c exits 0 for a config it would run."""
        return self.code == 0


def verdict(code: int, output: str) -> Verdict:
    """A check's verdict from its exit code and output."""
    alerts = [_PID.sub(r"[\1] ", line) for line in output.splitlines() if line.startswith("[ALERT]")]
    return Verdict(code, tuple(alerts))


def without_tuning(argv: list[str]) -> list[str]:
    """The same argv without the agent's ``-f <...haproxy-check-tuning.conf>``."""
    out: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "-f" and index + 1 < len(argv) and argv[index + 1].endswith(TUNING_NAME):
            skip = True
            continue
        out.append(arg)
    return out


def run(argv: list[str], timeout: float = 120.0) -> tuple[Verdict, str]:
    """Run one check; its verdict and its whole output."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
    return verdict(done.returncode, output), output

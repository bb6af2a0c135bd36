#!/usr/bin/env python3
"""haproxy for a test run that proves the session cache changes no verdict (not for amphorae).

As ``haproxy_cmd`` (``AMPHORA_HAPROXY_CMD=$PWD/scripts/haproxy_check_twice.py``), every ``haproxy -c``
the agents run with their ``-f haproxy-check-tuning.conf`` is run a second time without it; both
verdicts (exit code, ALERT lines) go as one JSON line to ``$AMPHORA_CHECK_TWICE_LOG``, and the
agent gets the first run's answer. Anything else is the real haproxy (``exec``, same argv).

    scripts/haproxy_check_twice.py --summary LOG   # checks, accepted, rejected, disagreements
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lab.verdicts import TUNING_NAME, run, without_tuning

REAL = os.environ.get("AMPHORA_REAL_HAPROXY", "/usr/sbin/haproxy")


def check_twice(args: list[str]) -> int:
    """Both checks; the record; the first check's output and exit code."""
    tuned, output = run([REAL, *args])
    plain, _ = run([REAL, *without_tuning(args)])
    log = os.environ.get("AMPHORA_CHECK_TWICE_LOG")
    if log:
        config = args[args.index("-f") + 1] if "-f" in args else ""
        record = {
            "config": config,
            "tuned": [tuned.code, list(tuned.alerts)],
            "plain": [plain.code, list(plain.alerts)],
            "same": tuned == plain,
        }
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    sys.stdout.write(output)
    return tuned.code


def summary(log: Path) -> int:
    """Print the counts of a log; exit 1 when any check disagreed."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    differ = [r for r in records if not r["same"]]
    accepted = sum(1 for r in records if r["tuned"][0] == 0)
    print(
        f"{len(records)} checks run both ways: {accepted} accepted, {len(records) - accepted} rejected, "
        f"{len(differ)} with a different verdict"
    )
    for record in differ[:20]:
        print(json.dumps(record))
    return 1 if differ else 0


def main(argv: list[str]) -> int:
    """haproxy's command line, or ``--summary LOG``."""
    if argv[:1] == ["--summary"] and len(argv) == 2:
        return summary(Path(argv[1]))
    if "-c" in argv and any(arg.endswith(TUNING_NAME) for arg in argv):
        return check_twice(argv)
    os.execv(REAL, [REAL, *argv])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

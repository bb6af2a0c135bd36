"""haproxy -c: at most ``MAX_CHECKS`` at once (the rest wait), its argv, and the largest allocation
the kernel grants (what a session cache must fit in)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from amphora_agent.system import haproxy

FAKE = """#!/bin/sh
# a haproxy -c that takes 0.3 s and notes how many ran beside it
echo start >> {log}
sleep 0.3
echo end >> {log}
"""


def test_concurrent_checks_are_bounded(tmp_path: Path) -> None:
    """Six checks asked at once: never more than MAX_CHECKS run together, all of them run."""
    log = tmp_path / "log"
    fake = tmp_path / "haproxy"
    fake.write_text(FAKE.format(log=log))
    fake.chmod(0o755)
    instance = haproxy.Instance(
        fake, tmp_path / "cfg", tmp_path / "ug", tmp_path / "pid", tmp_path / "m", "p", None
    )
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: haproxy.check(instance, tuning=tmp_path / "t"), range(6)))
    running, peak = 0, 0
    for event in log.read_text().split():
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    assert peak == haproxy.MAX_CHECKS
    assert log.read_text().split().count("end") == 6


def test_the_check_argv_puts_the_tuning_file_last(tmp_path: Path) -> None:
    """The uploaded file first, the image's user-group file, the tuning file last (it must win)."""
    instance = haproxy.Instance(Path("/h"), Path("/c"), Path("/ug"), Path("/pid"), Path("/m"), "peer", None)
    assert haproxy.check_argv(instance, Path("/staged"), Path("/tune")) == [
        "/h",
        "-c",
        "-f",
        "/staged",
        "-f",
        "/ug",
        "-f",
        "/tune",
        "-L",
        "peer",
    ]
    assert haproxy.check_argv(instance) == ["/h", "-c", "-f", "/c", "-f", "/ug", "-L", "peer"]


MEMINFO = (
    "MemTotal:        1014720 kB\nMemFree: 614400 kB\nSwapTotal: 1024 kB\n"
    "CommitLimit: 508384 kB\nCommitted_AS: 300000 kB\n"
)


@pytest.mark.parametrize(
    ("mode", "limit_kib"),
    [("0", 1014720 + 1024), ("1", 1014720 + 1024), ("2", 508384 - 300000), ("", 1015744)],
)
def test_allocation_limit(tmp_path: Path, mode: str, limit_kib: int) -> None:
    """RAM plus swap (the kernel's heuristic), or what is left of the commit limit when strict."""
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "policy").write_text(mode + "\n")
    assert haproxy.allocation_limit(tmp_path / "meminfo", tmp_path / "policy") == limit_kib * 1024
    assert haproxy.allocation_limit(tmp_path / "missing", tmp_path / "policy") is None

"""The demo (``make demo``) runs end to end, balances over both members of both listeners, and cleans up."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import demo

pytestmark = pytest.mark.integration


def our_namespaces() -> set[str]:
    """Named network namespaces made by this process (other processes make theirs concurrently)."""
    root = Path("/run/netns")
    prefix = f"amp{os.getpid() % 100000}-"
    return {name for name in os.listdir(root) if name.startswith(prefix)} if root.is_dir() else set()


def test_demo_balances_over_both_members_of_both_listeners() -> None:
    """Both listeners answered from both of their members; the API showed them ACTIVE; nothing is left."""
    before = our_namespaces()
    out = io.StringIO()
    result = demo.run(out, requests_per_listener=6)
    for listener in demo.DEMO_LISTENERS:
        assert set(result.answers[listener.name]) == {m.name for m in listener.members}, out.getvalue()
    assert result.balanced()
    assert sorted((row["uuid"], row["type"], row["status"]) for row in result.listeners) == sorted(
        (listener.id, listener.protocol, "ACTIVE") for listener in demo.DEMO_LISTENERS
    )
    assert result.details["haproxy_count"] == 1
    assert our_namespaces() <= before


def test_demo_module_exits_zero_and_prints_the_table() -> None:
    """``python -m lab.demo`` (what ``make demo`` runs) exits 0 and names every member."""
    done = subprocess.run(
        [sys.executable, "-m", "lab.demo", "--requests", "4"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for listener in demo.DEMO_LISTENERS:
        for member in listener.members:
            assert member.name in done.stdout
    assert "Demo finished" in done.stdout

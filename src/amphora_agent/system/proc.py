"""One subprocess runner: argv lists, optional network namespace, bounded time, typed failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

from amphora_agent.errors import CommandFailed

NETNS_DIR = Path("/run/netns")


def in_netns(argv: list[str], netns: str | None) -> list[str]:
    """Prefix ``argv`` so it runs inside the named network namespace (no private mount namespace)."""
    if not netns:
        return argv
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def run(
    argv: list[str],
    *,
    netns: str | None = None,
    timeout: float = 60.0,
    input_data: bytes | None = None,
    failure: str = "Command failed",
) -> str:
    """Run ``argv`` (stderr merged into stdout) and return its output; raise CommandFailed on error."""
    full = in_netns(argv, netns)
    try:
        done = subprocess.run(
            full,
            input=input_data,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(failure, f"{full[0]}: command not found", argv=full) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(failure, f"timed out after {timeout:g} s", argv=full) from exc
    output = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        raise CommandFailed(failure, output, argv=full, code=done.returncode)
    return output

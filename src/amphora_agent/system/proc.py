"""One subprocess runner: argv lists, optional network namespace, bounded time, typed failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from amphora_agent.errors import CommandFailed

NETNS_DIR = Path("/run/netns")


def in_netns(argv: list[str], netns: str | None) -> list[str]:
    """Prefix ``argv`` so it runs inside the named network namespace (no private mount namespace)."""
    if not netns:
        return argv
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def _completed(
    full: list[str], failure: str, timeout: float, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` with a missing binary or a time-out turned into CommandFailed."""
    try:
        return subprocess.run(full, timeout=timeout, check=False, close_fds=True, **kwargs)
    except FileNotFoundError as exc:
        raise CommandFailed(failure, f"{full[0]}: command not found", argv=full) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(failure, f"timed out after {timeout:g} s", argv=full) from exc


def run(
    argv: list[str],
    *,
    netns: str | None = None,
    timeout: float = 60.0,
    input_data: bytes | None = None,
    failure: str = "Command failed",
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv`` (stderr merged into stdout) and return its output; raise CommandFailed on error."""
    full = in_netns(argv, netns)
    done = _completed(
        full, failure, timeout, input=input_data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    output = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        raise CommandFailed(failure, output, argv=full, code=done.returncode)
    return output


def detach(
    argv: list[str],
    *,
    log: Path,
    netns: str | None = None,
    failure: str = "Command failed",
    env: dict[str, str] | None = None,
) -> None:
    """Start ``argv`` in its own session, not our child (``setsid -f``), its output appended to ``log``.

    The process outlives the agent, as haproxy does; ``argv`` must not fork into the background itself.
    """
    full = in_netns(["setsid", "-f", *argv], netns)
    # a link in the log's place is refused (ELOOP), never appended through
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    try:
        done = _completed(full, failure, 10.0, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env)
    finally:
        os.close(fd)
    if done.returncode != 0:
        raise CommandFailed(failure, f"{full[0]} exited with {done.returncode}", argv=full)

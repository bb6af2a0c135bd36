"""The one shape of every supervised unit (haproxy per load balancer, keepalived for VRRP and LVS).

An uploaded config (already streamed to a temp file beside its destination) is staged as
``<name>.new``, checked by the unit's own program, then either committed or kept as
``<name>.new-failed`` for debugging: a rejected config never replaces a good one. The
supervisor starts a unit only when no API call holds its lock and it still should run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from amphora_agent.system import files, uploads

T = TypeVar("T")


def stage_check_commit(
    upload: uploads.Upload,
    target: Path,
    mode: int,
    check: Callable[[Path], T],
    *,
    root: Path,
    suffix: str = ".new",
) -> T:
    """Move the upload to ``target<suffix>``, run ``check`` on it, then onto ``target`` or ``...-failed``
    (every move through ``target``'s folder reached from ``root`` without following a link)."""
    staged = target.with_name(target.name + suffix)
    uploads.place(upload, staged, mode, root=root)
    try:
        result = check(staged)
    except BaseException:
        files.move(staged, target.with_name(staged.name + "-failed"), root=root)
        raise
    files.move(staged, target, root=root)
    return result


def start_if_wanted(
    lock: threading.Lock, should_start: Callable[[], bool], start: Callable[[], None]
) -> bool:
    """Start a unit unless an API call is working on it or it no longer should start; True if it did."""
    if not lock.acquire(blocking=False):
        return False  # an API call is working on it right now
    try:
        if not should_start():
            return False
        start()
        return True
    finally:
        lock.release()

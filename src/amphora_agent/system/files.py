"""The only module that writes files: atomic replacement with named modes.

A crash at any point leaves either the old file or the new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path

from amphora_agent.errors import DiskFull

PRIVATE = 0o600  # keys, certificates, configs holding secrets
PUBLIC = 0o644  # state other processes read
GROUP_READ = 0o640  # agent state an admin group may read (heartbeat counters)
EXECUTABLE = 0o755  # scripts the rendered configs call
DIRECTORY = 0o755


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int = DIRECTORY) -> Path:
    """Create ``path`` (and parents) if missing; return it."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, rename, fsync folder."""
    ensure_dir(path.parent)
    # one temp file per writer: two threads writing the same path must not share (and mix) one
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_native_id()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("No space left on device", f"cannot write {path}") from exc
        raise


def move(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` atomically and make the rename durable."""
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def remove(path: Path) -> bool:
    """Remove a file or socket if it exists; return whether it did."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_tree(path: Path) -> None:
    """Remove a directory and everything below it, if it exists."""
    shutil.rmtree(path, ignore_errors=True)


def clean_stale_temps(folder: Path, name: str = "*", recursive: bool = False) -> list[Path]:
    """Drop temp files a crash left behind in ``folder`` (never renamed into place); return them.

    ``name`` narrows it to the temps of one file (in a folder the agent shares), ``recursive`` looks
    in every subfolder too. A temp whose writer (the pid in its name) is still alive is kept.
    """
    if not folder.is_dir():
        return []
    pattern = f".{name}.tmp-*"
    removed = []
    for entry in folder.rglob(pattern) if recursive else folder.glob(pattern):
        pid = entry.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed

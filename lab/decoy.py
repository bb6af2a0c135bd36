"""A decoy folder outside the agent's folders: what it holds before and after tells whether the agent
(or a haproxy it ran) created, changed or deleted anything there.

Tests and the ``content`` benchmark point uploaded configs, symbolic links and names at it, then
compare snapshots: every entry's type, mode, size, modification time and content (or link target).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

Entry = tuple[str, int, int, int, str]  # kind, mode, size, mtime_ns, sha256 or link target


def snapshot(folder: Path) -> dict[str, Entry]:
    """Every entry under ``folder`` (links not followed), by relative path."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                kind, digest = "link", os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                kind, digest = "file", hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                kind, digest = ("dir" if stat.S_ISDIR(info.st_mode) else "other"), ""
            mtime = 0 if kind == "dir" else info.st_mtime_ns  # a folder's mtime moves with a listing's atime
            found[str(path.relative_to(folder))] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_size,
                mtime,
                digest,
            )
    return found


@dataclass
class Decoy:
    """A folder of files nobody but the test may touch: ``changes()`` lists what happened to it."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "sub").mkdir(parents=True, exist_ok=True)
        for name, data in (
            ("victim", b"precious\n"),
            ("servers-state", b"not haproxy's\n"),
            ("sub/haproxy.cfg", b"global\n"),
            ("sub/www.pem", b"not a tenant certificate\n"),
        ):
            (self.root / name).write_bytes(data)
        self.before = snapshot(self.root)

    def path(self, name: str) -> Path:
        """A path inside the decoy."""
        return self.root / name

    def changes(self) -> list[str]:
        """Entries created, changed or deleted since the decoy was made, one line each."""
        after = snapshot(self.root)
        lines = [f"created {name}" for name in sorted(after.keys() - self.before.keys())]
        lines += [f"deleted {name}" for name in sorted(self.before.keys() - after.keys())]
        lines += [
            f"changed {name}"
            for name in sorted(after.keys() & self.before.keys())
            if after[name] != self.before[name]
        ]
        return lines

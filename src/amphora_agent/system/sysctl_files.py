"""The kernel settings the system's ``sysctl.d`` files declare, read as ``sysctl --system`` reads them.

A new network namespace starts with the kernel's defaults, not the system's settings; the existing
agent therefore runs ``sysctl --system`` inside the haproxy namespace. This reads the same files in
the same order (a file name in an earlier folder hides the same name in later ones; names sorted;
``/etc/sysctl.conf`` last) so that the caller can apply the keys it wants where it wants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDERS = (
    Path("/etc/sysctl.d"),
    Path("/run/sysctl.d"),
    Path("/usr/local/lib/sysctl.d"),
    Path("/usr/lib/sysctl.d"),
    Path("/lib/sysctl.d"),
)
SYSCTL_CONF = Path("/etc/sysctl.conf")


@dataclass(frozen=True)
class Setting:
    """``key = value``; ``optional`` when the line starts with ``-`` (a missing key is no error)."""

    key: str
    value: str
    optional: bool = False


def parse(text: str) -> list[Setting]:
    """The settings of one file (comments, blank and malformed lines skipped; keys with ``/`` read
    as with dots)."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        optional = key.startswith("-")
        key = key.lstrip("-").replace("/", ".")
        if key and "*" not in key:  # globs name interfaces sysctl expands itself: not needed here
            found.append(Setting(key, value, optional))
    return found


def declared(folders: tuple[Path, ...] = FOLDERS, conf: Path = SYSCTL_CONF) -> list[Setting]:
    """Every setting in application order (a later one wins); unreadable files are skipped."""
    chosen: dict[str, Path] = {}
    for folder in folders:
        try:
            entries = sorted(folder.glob("*.conf"))
        except OSError:
            continue
        for entry in entries:
            chosen.setdefault(entry.name, entry)
    settings: list[Setting] = []
    for path in [chosen[name] for name in sorted(chosen)] + [conf]:
        try:
            settings += parse(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return settings

"""Apply an amphora's Nova config drive (``config-2``): the controller's files, every boot.

The controller hands an amphora its certificate, its client CA, the agent's config and the log
offloading rules on the config drive: as Nova's ``files`` list in ``openstack/latest/meta_data.json``
(``content_path`` names ``openstack/content/NNNN``) or, with the deprecated
``user_data_config_drive = True``, as cloud-init ``write_files`` in ``openstack/latest/user_data``.
The image has no cloud-init: this script runs before rsyslog and the agent on every boot.

Idempotent without undoing the agent: ``PUT /1.0/config`` and ``PUT /1.0/certificate`` replace
the agent's config and certificate later, and a reboot must keep those. A state file records the
hash of each drive file as last applied; a file is written again only when it is missing or the
drive now carries other content. Modes and owners are set on every boot (keys and anything under
``/etc/octavia`` 0600, its folders 0700).

Stdlib only, run by Debian's ``/usr/bin/python3`` (not the agent's venv), so it stays tiny and
works whatever the agent's version; the ``write_files`` parser reads the controller's shape of
YAML (block scalars, plain or quoted scalars) instead of pulling PyYAML into the image.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LABEL = "config-2"
STATE = "/var/lib/amphora-image/config-drive.json"
PRIVATE = 0o600
PRIVATE_DIR = 0o700
PUBLIC = 0o644
PUBLIC_DIR = 0o755
SECRET_PREFIXES = ("/etc/octavia/",)
MAX_FILE = 4 * 1024 * 1024  # a certificate bundle or a config, never more
DEVICE_WAIT = 20.0  # seconds for udev to show the cdrom under TCG
# Octavia renders user_data with Jinja autoescape on: markupsafe's five escapes reach the file.
_ENTITIES = (("&#34;", '"'), ("&#39;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))


class DriveError(Exception):
    """The config drive says something this script must not apply."""


@dataclass(frozen=True)
class DriveFile:
    """One file to place: where, what, and the mode/owner the drive asked for (if it did)."""

    path: str
    content: bytes
    mode: int | None = None
    owner: str | None = None


def checked_path(path: str) -> str:
    """An absolute, normalised target path; anything climbing out or relative is refused."""
    if not path.startswith("/") or "\x00" in path:
        raise DriveError(f"not an absolute path: {path!r}")
    norm = posixpath.normpath(path)
    if norm != path.rstrip("/") or ".." in path.split("/") or norm == "/":
        raise DriveError(f"not a plain file path: {path!r}")
    return norm


def read_bounded(path: Path) -> bytes:
    """A drive file's bytes, refusing anything larger than a config or certificate can be."""
    if path.stat().st_size > MAX_FILE:
        raise DriveError(f"{path} is larger than {MAX_FILE} bytes")
    return path.read_bytes()


def files_from_metadata(drive: Path) -> list[DriveFile]:
    """Nova's injected files: ``meta_data.json`` ``files`` entries and their ``content/NNNN``."""
    meta_path = drive / "openstack" / "latest" / "meta_data.json"
    if not meta_path.is_file():
        return []
    meta = json.loads(read_bounded(meta_path))
    found = []
    base = (drive / "openstack").resolve()
    for entry in meta.get("files") or []:
        target = checked_path(str(entry["path"]))
        source = (base / str(entry["content_path"]).lstrip("/")).resolve()
        if base not in source.parents:
            raise DriveError(f"content_path outside the drive: {entry['content_path']!r}")
        found.append(DriveFile(target, read_bounded(source)))
    return found


def _scalar(text: str) -> str:
    """A plain, single- or double-quoted YAML scalar (the forms cloud-config keys use)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return str(json.loads(text))
    return re.sub(r"\s+#.*$", "", text)


def _block(lines: list[str], start: int, parent_indent: int, style: str) -> tuple[str, int]:
    """A literal block scalar (``|``, ``|-``, ``|+``) from ``lines[start:]``; returns (text, next)."""
    body: list[str] = []
    indent: int | None = None
    i = start
    while i < len(lines):
        line = lines[i]
        if line.strip():
            width = len(line) - len(line.lstrip(" "))
            if indent is None and width > parent_indent:
                indent = width
            if indent is None or width < indent:
                break
            body.append(line[indent:])
        else:
            body.append("")
        i += 1
    text = "".join(f"{line}\n" for line in body)
    content = text.rstrip("\n")
    if style == "|-":
        return content, i
    if style == "|+":
        return text, i
    return (f"{content}\n" if content else ""), i


def parse_write_files(text: str) -> list[dict[str, str]]:
    """The ``write_files`` list of a cloud-config document, each item as ``{key: string}``."""
    lines = text.splitlines()
    try:
        i = next(n for n, line in enumerate(lines) if re.fullmatch(r"write_files:\s*", line)) + 1
    except StopIteration:
        return []
    items: list[dict[str, str]] = []
    key_indent = -1
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        item = re.fullmatch(r"(\s*)-(\s+)([\w-]+):(.*)", line)
        key = re.fullmatch(r"(\s*)([\w-]+):(.*)", line)
        if item and (not items or len(item[1]) < key_indent):
            items.append({})
            key_indent = len(item[1]) + 1 + len(item[2])
            name, rest = item[3], item[4]
        elif key and items and len(key[1]) == key_indent:
            name, rest = key[2], key[3]
        else:
            break  # the next top-level key (runcmd:, timezone: ...) ends the list
        i += 1
        value = rest.strip()
        if value in ("|", "|-", "|+"):
            items[-1][name], i = _block(lines, i, key_indent, value)
        elif value.startswith((">", "|")):
            raise DriveError(f"write_files: unsupported block style {value!r} for {name}")
        else:
            items[-1][name] = _scalar(value)
    return items


def unescape_markup(text: str) -> str:
    """Undo the controller's Jinja autoescape (``"`` arrives as ``&#34;``), which cloud-init keeps."""
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    return text


def files_from_user_data(drive: Path) -> list[DriveFile]:
    """cloud-init ``write_files`` entries of ``openstack/latest/user_data`` (a ``#cloud-config``)."""
    path = drive / "openstack" / "latest" / "user_data"
    if not path.is_file():
        return []
    raw = read_bounded(path)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)[:MAX_FILE]
    text = raw.decode()
    if not text.startswith("#cloud-config"):
        return []
    found = []
    for item in parse_write_files(text):
        encoding = item.get("encoding", "text").lower()
        content = item.get("content", "")
        if encoding in ("b64", "base64"):
            data = base64.b64decode(content)
        elif encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = gzip.decompress(base64.b64decode(content))
        elif encoding == "text":
            data = unescape_markup(content).encode()
        else:
            raise DriveError(f"write_files: unknown encoding {encoding!r}")
        mode = int(item["permissions"], 8) if "permissions" in item else None
        found.append(DriveFile(checked_path(item["path"]), data, mode, item.get("owner")))
    return found


def default_mode(path: str, content: bytes) -> int:
    """0600 for keys and everything under /etc/octavia (the heartbeat key is in the config)."""
    if path.startswith(SECRET_PREFIXES) or b"PRIVATE KEY" in content:
        return PRIVATE
    return PUBLIC


def owner_ids(owner: str | None) -> tuple[int, int]:
    """``user[:group]`` as ids; root when absent or unknown on this image."""
    import grp
    import pwd

    if not owner:
        return 0, 0
    user, _, group = owner.partition(":")
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
    except KeyError:
        return 0, 0
    return uid, gid


def sha256(data: bytes) -> str:
    """The hash the state file records for a drive file."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(target: Path, content: bytes, mode: int) -> None:
    """Temp file in the same folder, fsync, rename: a power cut leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        os.write(fd, content)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def make_parents(target: Path, root: Path, private: bool) -> None:
    """Create missing folders of ``target`` (0700 for secret ones, else 0755)."""
    missing = []
    parent = target.parent
    while not parent.exists() and parent != root:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR if private else PUBLIC_DIR)


def apply(files: list[DriveFile], root: Path, state_file: Path) -> list[str]:
    """Place each file under ``root``; returns the paths written (not those merely kept)."""
    try:
        state: dict[str, str] = json.loads(state_file.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    written = []
    for item in files:
        target = root / item.path.lstrip("/")
        digest = sha256(item.content)
        mode = item.mode if item.mode is not None else default_mode(item.path, item.content)
        secret = item.path.startswith(SECRET_PREFIXES)
        make_parents(target, root, secret)
        if secret:
            target.parent.chmod(PRIVATE_DIR)
        if not target.is_file() or state.get(item.path) != digest:
            write_atomic(target, item.content, mode)
            written.append(item.path)
        state[item.path] = digest
        os.chmod(target, mode)
        if os.geteuid() == 0:
            os.chown(target, *owner_ids(item.owner))
    state_file.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    write_atomic(state_file, json.dumps(state, indent=1, sort_keys=True).encode(), PRIVATE)
    return written


def find_device(wait: float) -> Path | None:
    """The block device labelled ``config-2``, waiting up to ``wait`` seconds for udev."""
    link = Path("/dev/disk/by-label") / LABEL
    deadline = time.monotonic() + wait
    while True:
        if link.exists():
            return link
        done = subprocess.run(
            ["blkid", "-t", f"LABEL={LABEL}", "-o", "device"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.split()[0])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


@contextlib.contextmanager
def mounted(device: Path) -> Iterator[Path]:
    """The drive mounted read-only on a private temporary folder (ISO 9660 or vfat)."""
    with tempfile.TemporaryDirectory(prefix="config-drive.") as where:
        subprocess.run(["mount", "-o", "ro,nosuid,nodev,noexec", str(device), where], check=True)
        try:
            yield Path(where)
        finally:
            subprocess.run(["umount", where], check=False)


def apply_drive(drive: Path, root: Path, state_file: Path) -> list[str]:
    """Both forms from one drive tree: the ``files`` list first, then ``write_files``."""
    return apply(files_from_metadata(drive) + files_from_user_data(drive), root, state_file)


def main(argv: list[str] | None = None) -> int:
    """Find, mount and apply the config drive; ``--drive DIR`` applies an unpacked tree instead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, help="an unpacked config drive (default: find config-2)")
    parser.add_argument("--root", type=Path, default=Path("/"), help="where the files go (default /)")
    parser.add_argument("--state", type=Path, help=f"state file (default ROOT{STATE})")
    parser.add_argument("--wait", type=float, default=DEVICE_WAIT, help="seconds to wait for the drive")
    args = parser.parse_args(argv)
    state = args.state or args.root / STATE.lstrip("/")
    try:
        if args.drive is not None:
            written = apply_drive(args.drive, args.root, state)
        else:
            device = find_device(args.wait)
            if device is None:
                print(f"config-drive: no {LABEL} drive found: nothing applied")
                return 0
            with mounted(device) as drive:
                written = apply_drive(drive, args.root, state)
    except (DriveError, OSError, ValueError, KeyError, subprocess.CalledProcessError) as exc:
        print(f"config-drive: {exc}", file=sys.stderr)
        return 1
    print(f"config-drive: wrote {', '.join(written) if written else 'nothing (all current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

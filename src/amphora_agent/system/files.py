"""Writes files: atomic replacement with named modes, confined to the agent's folders.

A crash at any point leaves either the old file or the new one, never a partial file.

Given a ``root`` (one of the agent's own folders: ``base_path``, ``base_cert_dir``), an operation
walks from it with ``O_NOFOLLOW`` and works through folder descriptors: no symbolic link below the
root is ever followed, so nothing outside it is written, replaced or deleted through one. The root
itself is the operator's choice and may be a link.

Uploads (bodies streamed to disk) are ``system.uploads``, built on the primitives here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from amphora_agent.errors import DiskFull, UnsafePath

PRIVATE = 0o600  # keys, certificates, configs holding secrets
PUBLIC = 0o644  # state other processes read
GROUP_READ = 0o640  # agent state an admin group may read (heartbeat counters)
EXECUTABLE = 0o755  # scripts the rendered configs call
DIRECTORY = 0o755
NAME_MAX = 255
# ".<name>.tmp-<pid>-<thread id>": pids and thread ids have at most 7 digits (pid_max 4194304)
TEMP_KEEP = NAME_MAX - len("..tmp--") - 2 * 7
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """The temp file name of one writer of ``name``: within NAME_MAX even for a 255-byte name."""
    return f".{name[:TEMP_KEEP]}.tmp-{os.getpid()}-{threading.get_native_id()}"


def below(root: Path, path: Path) -> tuple[str, ...]:
    """The components of ``path`` under ``root`` (lexically): no ``..``, never outside."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        outside = f"{path} is not under {root}"
        raise UnsafePath("Refusing a path outside the agent's folders", outside) from None
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath("Refusing a path outside the agent's folders", str(path))
    return parts


def _open_folder(root: Path, parts: tuple[str, ...], create: int | None) -> int | None:
    """A descriptor of ``root/parts``, walked without following links; None when a part is missing
    (created with mode ``create`` instead, when given). A link or a non-folder is UnsafePath."""
    fd = os.open(root, FOLDER_FLAGS)  # the root: the operator's choice, a link there is fine
    try:
        for index, name in enumerate(parts):
            try:
                child = os.open(name, FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create, dir_fd=fd)
                child = os.open(name, FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = root.joinpath(*parts[: index + 1])
                    raise UnsafePath(
                        "Refusing to follow a link inside the agent's folders",
                        f"{where} is a symbolic link or not a folder",
                    ) from exc
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder_of(path: Path, root: Path, create: int | None) -> Iterator[int | None]:
    """A descriptor of ``path``'s folder reached from ``root`` without following a link (created
    with mode ``create`` when given), None for the root itself; closed after the block."""
    fd = _open_folder(root, below(root, path.parent), create) if path != root else None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def ensure_dir(path: Path, mode: int = DIRECTORY, *, root: Path | None = None) -> Path:
    """Create ``path`` (and parents) if missing; return it. With ``root``: every folder from ``root``
    down to ``path`` is a real folder (created where missing), never a symbolic link."""
    if root is None:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        return path
    root.mkdir(mode=mode, parents=True, exist_ok=True)
    fd = _open_folder(root, below(root, path), mode)
    if fd is not None:
        os.close(fd)
    return path


def _write_fd(fd: int, data: bytes, mode: int) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fchmod(fd, mode)
    os.fsync(fd)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE, *, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, rename, fsync folder.

    With ``root``: the folder is reached without following links (see the module docstring).
    """
    if root is not None:
        _confined_write(path, data, mode, root)
        return
    ensure_dir(path.parent)
    # one temp file per writer: two threads writing the same path must not share (and mix) one
    tmp = path.with_name(temp_name(path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            _write_fd(fd, data, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise_disk_full(exc, path)
        raise


def raise_disk_full(exc: OSError, path: Path) -> None:
    """A full disk or quota as the agent's ``DiskFull`` (507); any other error is the caller's."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull("No space left on device", f"cannot write {path}") from exc


def _confined_write(path: Path, data: bytes, mode: int, root: Path) -> None:
    ensure_dir(root)
    with folder_of(path, root, DIRECTORY) as folder:
        if folder is None:
            raise UnsafePath("Refusing to replace the agent's folder itself", str(path))
        tmp = temp_name(path.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode, dir_fd=folder)
            try:
                _write_fd(fd, data, mode)
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise_disk_full(exc, path)
            raise


def read_bytes(path: Path, *, root: Path) -> bytes:
    """The bytes of a regular file under ``root``, reached and opened without following any link.

    FileNotFoundError when it (or a folder on the way) is missing; UnsafePath for a link."""
    with folder_of(path, root, None) as folder:
        if folder is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath("Refusing to follow a link inside the agent's folders", str(path)) from exc
            raise
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


def move(src: Path, dst: Path, *, root: Path | None = None) -> None:
    """Rename ``src`` over ``dst`` (in the same folder when ``root`` is given: that folder reached
    without following a link) atomically, and make the rename durable."""
    if root is None:
        os.replace(src, dst)
        _fsync_dir(dst.parent)
        return
    if src.parent != dst.parent:
        raise UnsafePath("Refusing a move between folders", f"{src} -> {dst}")
    with folder_of(dst, root, None) as folder:
        if folder is None:
            raise UnsafePath("Refusing to replace the agent's folder itself", str(dst))
        os.replace(src.name, dst.name, src_dir_fd=folder, dst_dir_fd=folder)
        os.fsync(folder)


def remove(path: Path, *, root: Path | None = None) -> bool:
    """Remove a file or socket (a link: the link itself) if it exists; return whether it did.

    With ``root``: the folder is reached without following links; a linked folder counts as missing.
    """
    if root is None:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    try:
        with folder_of(path, root, None) as folder:
            if folder is None:
                return False
            os.unlink(path.name, dir_fd=folder)
    except FileNotFoundError:
        return False
    except UnsafePath:
        return False  # nothing of ours lies behind a link: there is nothing to remove
    return True


def remove_tree(path: Path, *, root: Path | None = None) -> None:
    """Remove a directory and everything below it, if it exists.

    With ``root``: reached without following links; a link in its place is removed itself, never
    what it points to (and ``rmtree`` never follows links below it either).
    """
    if root is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        with folder_of(path, root, None) as folder:
            if folder is None:
                return
            try:
                info = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path.name, dir_fd=folder, ignore_errors=True)
            else:
                os.unlink(path.name, dir_fd=folder)
    except UnsafePath:
        return


def is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a folder and not a symbolic link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: Path) -> bool:
    """Whether ``path`` is a regular file and not a symbolic link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def clean_stale_temps(folder: Path, name: str = "*", recursive: bool = False) -> list[Path]:
    """Drop temp files a crash left behind in ``folder`` (never renamed into place); return them.

    ``name`` narrows it to the temps of one file (in a folder the agent shares), ``recursive`` looks
    in every subfolder too. A temp whose writer (the pid in its name) is still alive is kept.
    """
    if not folder.is_dir():
        return []
    pattern = f".{name[:TEMP_KEEP]}.tmp-*"
    removed = []
    for entry in folder.rglob(pattern) if recursive else folder.glob(pattern):
        pid = entry.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


# -- uploads ---------------------------------------------------------------------------------------

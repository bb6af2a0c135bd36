"""Uploads: a request body streamed into a temp file beside its destination, then placed.

The body is never whole in memory (md5 computed on the way), and the move into place is a rename
on one file system; in the agent's folders nothing is reached through a link (``system.files``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.errors import UnsafePath
from amphora_agent.system import files

READ_BUDGET = 16 << 20  # bytes of uploads that checks may hold in memory at once (see Upload.contents)
_upload_numbers = itertools.count(1)


@dataclass(frozen=True)
class Destination:
    """Where an upload goes, and the agent's folder it lies under (no link below it is followed)."""

    path: Path
    root: Path | None = None


def staging_folder(target: Path) -> Path:
    """Where an upload for ``target`` outside the agent's folders is written: its folder, or the
    nearest existing one above it, never a link (the move into place stays on one file system)."""
    folder = target.parent
    while True:
        try:
            if stat.S_ISDIR(os.lstat(folder).st_mode):
                return folder
        except FileNotFoundError:
            pass
        if folder.parent == folder:
            return folder
        folder = folder.parent


def _staging_fd(target: Path, root: Path) -> tuple[int, Path]:
    """The deepest existing folder from ``root`` towards ``target``'s, reached without following a
    link: its descriptor and path (a missing, linked or odd folder is staged above)."""
    parts = files.below(root, target.parent)
    fd, folder = os.open(root, files.FOLDER_FLAGS), root
    for name in parts:
        try:
            child = os.open(name, files.FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            break
        os.close(fd)
        fd, folder = child, folder / name
    return fd, folder


class _Budget:
    """A byte budget shared by threads: big reservations wait for each other, small ones pass."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        """Hold ``amount`` bytes (at most the whole budget) of the budget for the block."""
        amount = min(amount, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= amount)
            self._free -= amount
        try:
            yield
        finally:
            with self._cond:
                self._free += amount
                self._cond.notify_all()


_read_budget = _Budget(READ_BUDGET)


@dataclass(frozen=True)
class Upload:
    """A request body already on disk beside its destination (fsynced), with its size and md5."""

    path: Path
    size: int
    md5: str

    @contextlib.contextmanager
    def contents(self) -> Iterator[bytes]:
        """The bytes, for a check that needs them whole: uploads held this way share ``READ_BUDGET``,
        so concurrent checks of big files take turns instead of filling the memory together."""
        with _read_budget.reserve(self.size):
            yield self.path.read_bytes()

    def discard(self) -> None:
        """Remove the temp file if it was not moved into place."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class UploadWriter:
    """Writes a body as it arrives into a temp file beside ``target``; ``finish`` makes the Upload.

    The temp file has the name ``atomic_write`` gives its temps, so the start-up clean-up removes the
    one a killed agent leaves; it is created new (never through a link) with mode 0600.
    """

    def __init__(self, target: Path, root: Path | None = None, folder: Path | None = None) -> None:
        # "up" and a counter in place of the thread id: within NAME_MAX up to 10**11 uploads
        name = f".{target.name[: files.TEMP_KEEP - 6]}.tmp-{os.getpid()}-up{next(_upload_numbers)}"
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if root is None:
                self.path = (folder or staging_folder(target)) / name
                self._fd: int | None = os.open(self.path, flags, files.PRIVATE)
                return
            dir_fd, staging = _staging_fd(target, root)
            try:
                self.path = staging / name
                self._fd = os.open(name, flags, files.PRIVATE, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            files.raise_disk_full(exc, target)
            raise

    def write(self, data: bytes | bytearray) -> None:
        """Append ``data`` and hash it."""
        assert self._fd is not None, "write after finish or discard"
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.discard()
            files.raise_disk_full(exc, self.path)
            raise
        self._md5.update(data)
        self.size += len(data)

    def finish(self) -> Upload:
        """Make the bytes durable and close the file; the temp stays until moved or discarded."""
        assert self._fd is not None, "finish after finish or discard"
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.discard()
            files.raise_disk_full(exc, self.path)
            raise
        os.close(fd)
        return Upload(self.path, self.size, self._md5.hexdigest())

    def discard(self) -> None:
        """Close and remove the temp file (nothing is left behind)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def place(upload: Upload, path: Path, mode: int, *, root: Path | None = None) -> None:
    """Move an upload onto ``path`` with ``mode``, atomically and durably. With ``root``: the folder
    is reached without following links (see the module docstring); without: a copy across file
    systems when the folder is a link to another one."""
    os.chmod(upload.path, mode, follow_symlinks=False)
    if root is not None:
        with files.folder_of(path, root, files.DIRECTORY) as folder:
            if folder is None:
                raise UnsafePath("Refusing to replace the agent's folder itself", str(path))
            os.replace(upload.path, path.name, dst_dir_fd=folder)
            os.fsync(folder)
        return
    files.ensure_dir(path.parent)
    try:
        files.move(upload.path, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # the destination folder is a link to another file system
            raise
        copy = UploadWriter(path, folder=path.parent)
        try:
            with open(upload.path, "rb") as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    copy.write(block)
            place(copy.finish(), path, mode)
        finally:
            copy.discard()
        upload.discard()

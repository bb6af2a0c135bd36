"""Network namespaces: make sure the haproxy namespace exists, tell a re-created one, work inside one."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from amphora_agent.system import proc

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> str:
    """The bind-mount path of a named namespace."""
    return str(proc.NETNS_DIR / name)


def exists(name: str) -> bool:
    """Whether the named namespace is mounted."""
    return os.path.exists(path(name))


def ensure(name: str) -> bool:
    """Create the namespace with ``lo`` up if it is missing; return whether it was created."""
    if exists(name):
        return False
    proc.run(["ip", "netns", "add", name], failure="Cannot create network namespace")
    proc.run(["ip", "link", "set", "lo", "up"], netns=name, failure="Cannot bring up lo")
    return True


def identity(name: str) -> tuple[int, int] | None:
    """(device, inode) of the named namespace, None when it is not mounted: a re-created one differs."""
    try:
        st = os.stat(path(name))
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def enter(name: str) -> None:
    """Move the calling thread (only it, and the threads it starts later) into the namespace.

    Sockets it creates from then on belong to that namespace, wherever they are used afterwards.
    """
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def call_in(name: str, func: Callable[[], T]) -> T:
    """Run ``func`` in a short-lived thread that has joined the namespace (the caller's is untouched)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            enter(name)
            result.append(func())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]

"""glibc settings that keep the agent's memory close to what it uses (a complement, not the fix).

The fix is not to allocate for connections that have not authenticated (``listener``). These only
make sure that what bursts of requests free goes back to the system: few malloc arenas for the
worker threads, big buffers always mapped (and unmapped when freed), and a trim after a burst.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

LOG = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2  # glibc's default is 8 per core, each keeping its own freed memory
MMAP_THRESHOLD = 256 << 10  # fixed: glibc otherwise raises it to the largest size freed so far


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None
    return libc


def configure() -> None:
    """Few arenas and a fixed mmap threshold; call before the worker threads start."""
    libc = _libc()
    if libc is None:
        return
    if not (libc.mallopt(M_ARENA_MAX, ARENAS) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        LOG.info("mallopt refused the arena or mmap settings; memory may stay high after bursts")


def trim() -> None:
    """Give the free pages of the heap back to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

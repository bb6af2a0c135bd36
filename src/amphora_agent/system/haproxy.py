"""haproxy itself: config check, master-worker start/reload/stop, master CLI and stats socket clients.

haproxy runs detached (``-W -D``): its master is not the agent's child, so an agent restart or crash
never drops traffic. The master CLI (``-S``) tells whether a start or reload really took.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.errors import CommandFailed, Unavailable
from amphora_agent.system import files, proc

CHECK_TIMEOUT = 60.0
# ``haproxy -c`` runs in the amphora beside the running haproxys: at most this many at once (each
# costs about 15 MiB and 30 ms of a core; callers wait for a slot, at most CHECK_TIMEOUT)
MAX_CHECKS = 2
_CHECK_SLOTS = threading.BoundedSemaphore(MAX_CHECKS)
# The last -f of a check: haproxy -c otherwise allocates the whole SSL session cache (the controller
# sizes it from the amphora's memory: about 270 MiB for 1 GiB), and its size changes no verdict.
CHECK_TUNING = b"global\n    tune.ssl.cachesize 0\n"
SSL_CACHE_ENTRY_BYTES = 250  # what haproxy 2.6 allocates per tune.ssl.cachesize entry (249.5 measured)
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Instance:
    """Everything needed to run one load balancer's haproxy: the same argv for check and run."""

    cmd: Path
    config: Path
    user_group: Path
    pid_file: Path
    master_socket: Path
    peer_name: str
    netns: str | None

    def files_args(self) -> list[str]:
        """The ``-f`` and ``-L`` arguments shared by the check and the real run."""
        return ["-f", str(self.config), "-f", str(self.user_group), "-L", self.peer_name]

    def run_argv(self) -> list[str]:
        """The argv of the detached master (kept by haproxy for its re-exec on reload)."""
        return [
            str(self.cmd),
            "-W",
            "-D",
            *self.files_args(),
            "-p",
            str(self.pid_file),
            "-S",
            f"{self.master_socket},mode,600",
        ]


@dataclass(frozen=True)
class MasterState:
    """What ``show proc`` on the master CLI says."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[int, ...]  # workers of the current generation (started by the last load)


def check_argv(instance: Instance, config: Path | None = None, tuning: Path | None = None) -> list[str]:
    """``haproxy -c`` on ``config`` (default: the instance's) with the run's other arguments, then
    ``tuning`` (a file holding CHECK_TUNING) so that the check allocates no SSL session cache."""
    args = instance.files_args()
    if config is not None:
        args[1] = str(config)
    if tuning is not None:
        args[4:4] = ["-f", str(tuning)]
    return [str(instance.cmd), "-c", *args]


def check(instance: Instance, config: Path | None = None, tuning: Path | None = None) -> str:
    """Run ``haproxy -c`` (see check_argv), at most MAX_CHECKS at once; its output."""
    if not _CHECK_SLOTS.acquire(timeout=CHECK_TIMEOUT):
        raise Unavailable("Too many configuration checks", f"{MAX_CHECKS} haproxy -c are running")
    try:
        argv = check_argv(instance, config, tuning)
        return proc.run(argv, timeout=CHECK_TIMEOUT, failure="Invalid request")
    finally:
        _CHECK_SLOTS.release()


def _meminfo(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            values[key] = int(rest.split()[0]) * 1024
    return values


def allocation_limit(
    meminfo: Path = Path("/proc/meminfo"), policy: Path = Path("/proc/sys/vm/overcommit_memory")
) -> int | None:
    """The largest single allocation the kernel grants a process now, in bytes (None: unknown).

    Strict overcommit (2): what is left of the commit limit; otherwise (0, 1) RAM plus swap: the
    kernel's heuristic refuses more, and with 1 haproxy would write it all and be killed.
    """
    try:
        values = _meminfo(meminfo)
        mode = int(policy.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if mode == 2:
        return values.get("CommitLimit", 0) - values.get("Committed_AS", 0)
    return values.get("MemTotal", 0) + values.get("SwapTotal", 0)


def read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file, or None when it is missing or unreadable."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_running(pid: int | None, name: str = "haproxy") -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line names ``name``."""
    if pid is None or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and name.encode() in cmdline


def _unix_query(path: Path, command: str, timeout: float, half_close: bool) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def stats_query(socket_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to a stats socket and return the whole answer."""
    return _unix_query(socket_path, command, timeout, half_close=False)


def master_query(socket_path: Path, command: str, timeout: float = 2.0) -> str:
    """Send one command to the master CLI (it answers only once our sending side is closed)."""
    return _unix_query(socket_path, command, timeout, half_close=True)


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?", re.MULTILINE)


def parse_show_proc(text: str) -> MasterState | None:
    """Parse the master CLI's ``show proc``: the master's reload counters and the current workers."""
    match = _MASTER_LINE.search(text)
    if match is None:
        return None
    workers: list[int] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line
            continue
        fields = line.split()
        # a worker's reload count is how many reloads it survived: 0 is the current generation
        if section == "# workers" and len(fields) > 2 and fields[1:3] == ["worker", "0"]:
            workers.append(int(fields[0]))
    return MasterState(int(match[1]), int(match[2]), int(match[3] or 0), tuple(workers))


def master_state(instance: Instance) -> MasterState | None:
    """The master's state, or None when its CLI does not answer."""
    try:
        return parse_show_proc(master_query(instance.master_socket, "show proc"))
    except OSError:
        return None


def _wait_for(
    instance: Instance, accept: Callable[[MasterState], bool], timeout: float
) -> MasterState | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = master_state(instance)
        if state is not None and accept(state):
            return state
        time.sleep(0.005)
    return None


def start(instance: Instance) -> MasterState:
    """Start a detached master-worker haproxy and wait until its worker runs."""
    for stale in (instance.master_socket, instance.pid_file):
        stale.unlink(missing_ok=True)
    proc.run(
        instance.run_argv(),
        netns=instance.netns,
        timeout=READY_TIMEOUT,
        failure="Error starting haproxy",
    )
    state = _wait_for(instance, lambda s: bool(s.workers), READY_TIMEOUT)
    if state is None:
        raise CommandFailed("Error starting haproxy", "haproxy started but its worker never came up")
    return state


def reload(instance: Instance, pid: int) -> MasterState:
    """Reload with SIGUSR2 (listening sockets pass to the new worker) and confirm the new worker runs.

    A master that cannot load the new config (e.g. a VIP not plugged yet) counts a failed reload and
    keeps its old workers serving: that is reported as an error, never as success.
    """
    before = master_state(instance)
    os.kill(pid, signal.SIGUSR2)

    def settled(state: MasterState) -> bool:
        return before is None or state.reloads > before.reloads

    after = _wait_for(instance, settled, READY_TIMEOUT)
    if after is None:
        raise CommandFailed("Error reloading haproxy", "haproxy did not confirm the reload")
    if (before is not None and after.failed_reloads > before.failed_reloads) or not after.workers:
        raise CommandFailed(
            "Error reloading haproxy",
            "haproxy could not load the new configuration; the previous worker keeps serving",
        )
    return after


def stop(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a master (SIGTERM, then SIGKILL after ``timeout``) and wait until it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_running(pid):
                return
            time.sleep(0.01)
    raise CommandFailed("Error stopping haproxy", f"haproxy process with PID {pid} did not stop")


def masters_by_config(folder: Path) -> dict[Path, int]:
    """Live haproxy masters whose config (first ``-f``) lies under ``folder``: config -> master pid.

    One scan of /proc, independent of pid files: it finds a master whose pid file or whole folder
    was removed. Workers (children of a found master) and ``-c`` checks are left out.
    """
    prefix = str(folder).rstrip("/") + "/"
    found: dict[int, tuple[Path, int]] = {}  # pid -> (config, parent pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except (OSError, IndexError):
            continue
        if "haproxy" not in os.path.basename(argv[0]) or "-c" in argv or "-f" not in argv[:-1]:
            continue
        config = argv[argv.index("-f") + 1]
        if config.startswith(prefix) and len(stat) > 1 and stat[0] not in ("Z", "X"):
            found[int(entry.name)] = (Path(config), int(stat[1]))
    return {config: pid for pid, (config, parent) in found.items() if parent not in found}


def _reap(pid: int) -> None:
    """Collect ``pid`` if it happens to be our child (it normally is not: haproxy daemonises)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def save_server_state(stats_socket: Path, state_file: Path, root: Path | None = None) -> bool:
    """Dump ``show servers state`` to the state file so member health survives the reload."""
    try:
        text = stats_query(stats_socket, "show servers state")
    except OSError:
        return False
    files.atomic_write(state_file, (text.rstrip("\n") + "\n").encode(), files.PUBLIC, root=root)
    return True

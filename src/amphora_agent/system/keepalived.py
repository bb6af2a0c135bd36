"""keepalived itself: config test, checker dry start, detached start, reload (SIGHUP), stop, liveness.

keepalived runs in the foreground (``-n``) of its own session (``setsid -f``), so it is not the agent's
child and its log (``-l``) goes to a file beside its config even where no syslog exists; it outlives
an agent restart, as haproxy does. Its pid files name the main process and the VRRP or checker child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from amphora_agent.errors import CommandFailed
from amphora_agent.system import files, proc
from amphora_agent.system.haproxy import is_running, read_pid

KEEPALIVED = "keepalived"
TEST_TIMEOUT = 30.0
START_TIMEOUT = 10.0
SETTLE = 0.3  # a start counts once main and child stay up this long (the checker dies fast without IPVS)
STOP_TIMEOUT = 10.0  # a VRRP stop sends priority-0 adverts and removes addresses: about 1 s
IPVS_PROC = Path("/proc/net/ip_vs")
LOG_LIMIT = 1 << 20
_modprobe_tried = False


Child = Literal["vrrp", "check"]  # the keepalived child that must run: VRRP, or the LVS health checker


@dataclass(frozen=True)
class Instance:
    """Everything needed to run one keepalived: config, pid files, log, namespace."""

    config: Path
    pid_file: Path
    vrrp_pid_file: Path
    check_pid_file: Path
    log_file: Path
    netns: str | None
    log_facility: int = 1
    child: Child = "vrrp"
    path_prefix: Path | None = None  # where the scripts its config names may live (searched first)

    def run_argv(self) -> list[str]:
        """The foreground argv, logging to the console (that is, the log file)."""
        return [
            KEEPALIVED,
            "-n",
            "-l",
            "-D",
            f"--log-facility={self.log_facility}",
            "-f",
            str(self.config),
            "-p",
            str(self.pid_file),
            "-r",
            str(self.vrrp_pid_file),
            "-c",
            str(self.check_pid_file),
        ]

    @property
    def child_pid_file(self) -> Path:
        """The pid file of the child that does the work."""
        return self.vrrp_pid_file if self.child == "vrrp" else self.check_pid_file

    @property
    def pid_files(self) -> tuple[Path, Path, Path]:
        """Main, VRRP child and checker child."""
        return (self.pid_file, self.vrrp_pid_file, self.check_pid_file)


def environment(path_prefix: Path | None) -> dict[str, str] | None:
    """Our environment with ``path_prefix`` first on PATH (keepalived resolves script names there)."""
    if path_prefix is None:
        return None
    env = dict(os.environ)
    env["PATH"] = f"{path_prefix}:{env.get('PATH') or os.defpath}"
    return env


def _output(argv: list[str], netns: str | None, timeout: float, path_prefix: Path | None) -> str:
    """Output of a run whose exit code says nothing reliable (keepalived -t exits 0 on a missing file)."""
    try:
        env = environment(path_prefix)
        return proc.run(argv, netns=netns, timeout=timeout, failure="Invalid request", env=env)
    except CommandFailed as exc:
        if exc.code is None:  # not installed, or timed out
            raise
        return exc.details or ""


def config_test(config: Path, netns: str | None, path_prefix: Path | None = None) -> str:
    """``keepalived -t``: its diagnostics (inside ``netns``: it checks that interfaces exist)."""
    return _output([KEEPALIVED, "-t", "-l", "-f", str(config)], netns, TEST_TIMEOUT, path_prefix)


def checker_dry_start(config: Path, scratch: Path, netns: str | None, path_prefix: Path | None = None) -> str:
    """Start only the checker in the foreground; it parses ``virtual_server`` blocks and stops at IPVS.

    Only for kernels without IPVS (where ``keepalived -t`` skips those blocks); with IPVS the checker
    would program the kernel. Pid files go to ``scratch`` so a running listener is not disturbed.
    """
    argv = [KEEPALIVED, "-n", "-l", "-D", "-C", "-f", str(config)]
    for flag, name in (("-p", "dry.pid"), ("-r", "dry.vrrp.pid"), ("-c", "dry.check.pid")):
        argv += [flag, str(scratch / name)]
    return _output(argv, netns, TEST_TIMEOUT, path_prefix)


def ipvs_unavailable() -> str | None:
    """Why the kernel cannot do LVS here, or None when it can (one ``modprobe ip_vs`` is tried)."""
    global _modprobe_tried
    if not IPVS_PROC.exists() and not _modprobe_tried:
        _modprobe_tried = True
        with contextlib.suppress(CommandFailed):
            proc.run(["modprobe", "ip_vs"], timeout=10)
    if IPVS_PROC.exists():
        return None
    return (
        f"IPVS is not available in this kernel ({IPVS_PROC} is absent): keepalived cannot "
        "balance UDP or SCTP here, so nothing is forwarded"
    )


def main_pid(instance: Instance) -> int | None:
    """The live main keepalived of ``instance`` (zombies count as dead), or None."""
    pid = read_pid(instance.pid_file)
    return pid if is_running(pid, str(instance.config)) else None


def child_alive(instance: Instance) -> bool:
    """Whether the working child (VRRP or checker) runs."""
    return is_running(read_pid(instance.child_pid_file), str(instance.config))


def instance_pids(instance: Instance) -> list[int]:
    """Every live process started with this instance's pid file (main and children)."""
    needle = b"\0" + str(instance.pid_file).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() and is_running(int(entry.name), KEEPALIVED):
                found.append(int(entry.name))
    return found


def _rotate(log: Path) -> None:
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_LIMIT:
            files.move(log, log.with_name(log.name + ".1"))


def log_since(log: Path, offset: int, lines: int = 30) -> str:
    """The last ``lines`` lines keepalived logged after ``offset``."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start(instance: Instance, failure: str, expect_exit: bool = False) -> int:
    """Start keepalived detached and wait until its main process and working child stay up.

    With ``expect_exit`` (its checker cannot run here) it waits for the exit instead, so the failure
    carries keepalived's own words however long it takes to give up.
    """
    for stale in instance.pid_files:
        stale.unlink(missing_ok=True)
    _rotate(instance.log_file)
    offset = instance.log_file.stat().st_size if instance.log_file.exists() else 0
    env = environment(instance.path_prefix)
    proc.detach(instance.run_argv(), log=instance.log_file, netns=instance.netns, failure=failure, env=env)
    began = time.monotonic()
    while time.monotonic() - began < START_TIMEOUT:
        pid = main_pid(instance)
        if pid is not None and child_alive(instance) and not expect_exit:
            time.sleep(SETTLE)
            if main_pid(instance) == pid and child_alive(instance):
                return pid
        elif time.monotonic() - began > SETTLE and not instance_pids(instance):
            break  # it exited
        time.sleep(0.02)
    stop(instance)
    raise CommandFailed(failure, log_since(instance.log_file, offset) or "keepalived did not come up")


def reload(instance: Instance, pid: int) -> None:
    """SIGHUP: keepalived re-reads its config and keeps its VRRP state."""
    os.kill(pid, signal.SIGHUP)


def stop(instance: Instance, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the main process (it stops its children), SIGKILL what is left; remove the pid files."""
    pid = main_pid(instance)
    targets = [pid] if pid is not None else instance_pids(instance)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and instance_pids(instance):
            time.sleep(0.02)
        targets = instance_pids(instance)
        if not targets:
            break
    if targets:
        raise CommandFailed("keepalived did not stop", f"processes {targets} are still running")
    for path in instance.pid_files:
        files.remove(path)

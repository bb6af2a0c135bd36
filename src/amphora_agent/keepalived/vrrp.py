"""keepalived for VRRP (ACTIVE_STANDBY): stored config, check-script chain, start|reload|stop, liveness.

The same shape as haproxy: store config -> validate -> start|reload|stop -> is_alive. The desired state
is the ``running`` marker beside the config, so the supervisor restarts keepalived after a crash or a
reboot, and a ``stop`` keeps it stopped.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from pathlib import Path

from amphora_agent import lifecycle, validation
from amphora_agent.errors import CommandFailed, ConfigRejected, InvalidInput
from amphora_agent.keepalived import config_text, confinement
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.probes import vrrp_check
from amphora_agent.settings import ACTIVE_STANDBY, LiveSettings
from amphora_agent.system import files, keepalived, netns, uploads

LOG = logging.getLogger(__name__)


def install(path: Path, text: str, mode: int, root: Path) -> bool:
    """Write ``text`` to ``path`` (under ``root``, no link followed) unless it already holds exactly
    that; return whether it wrote."""
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and path.read_text() == text and (info.st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    files.atomic_write(path, text.encode(), mode, root=root)
    return True


class CheckScripts:
    """The chain the controller's VRRP config tracks: haproxy alive for every running load balancer,
    keepalived alive for every LVS listener that should run. Rewritten whenever either changes."""

    def __init__(self, live: LiveSettings, paths: Layout, lbs: LoadBalancers) -> None:
        self._live = live
        self._paths = paths
        self._lbs = lbs
        self._lock = threading.Lock()

    def wanted(self) -> bool:
        """Only ACTIVE_STANDBY amphorae (or ones holding a VRRP config) have a check chain."""
        active_standby = self._live.current.loadbalancer_topology == ACTIVE_STANDBY
        return active_standby or self._paths.vrrp().is_file()

    def haproxy_script(self, exclude: str | None = None) -> str | None:
        """The haproxy check for the running load balancers (minus ``exclude``, about to stop); None
        when only LVS listeners count."""
        lb_ids = self._lbs.layout.lb_ids()
        running = [lb for lb in lb_ids if lb != exclude and self._lbs.wants_running(lb)]
        if running:
            sockets = [self._lbs.layout.stats_socket(lb) for lb in running]
            return config_text.haproxy_check_sh(sys.executable, Path(vrrp_check.__file__), sockets)
        if lb_ids or self._paths.lvs_ids():
            return None
        return config_text.NOTHING_TO_SERVE_SH

    def refresh(self, force: bool = False, exclude: str | None = None) -> None:
        """Bring every script of the chain up to date (only what changed is written).

        ``exclude``: a load balancer about to stop, left out before it stops so that no check runs
        against its closing socket (that would fail the MASTER over)."""
        if not (force or self.wanted()):
            return
        paths, root = self._paths, self._paths.base
        with self._lock:
            files.ensure_dir(paths.check_scripts_dir, root=root)
            script = config_text.check_script_sh(paths.check_scripts_dir)
            install(paths.check_script, script, files.EXECUTABLE, root)
            haproxy = self.haproxy_script(exclude)
            target = paths.check_scripts_dir / "haproxy_check_script.sh"
            if haproxy is None:
                files.remove(target, root=root)
            elif install(target, haproxy, files.EXECUTABLE, root):
                LOG.info("VRRP haproxy check now covers: %s", haproxy.splitlines()[1])
            lvs_check = paths.check_scripts_dir / "lvs_udp_check.sh"
            if paths.lvs_ids():
                install(lvs_check, config_text.lvs_check_sh(paths.lvs_dir), files.EXECUTABLE, root)
            else:
                files.remove(lvs_check, root=root)


class Vrrp:
    """``PUT /1.0/vrrp/upload`` and ``PUT /1.0/vrrp/<action>``: one keepalived in the haproxy namespace."""

    def __init__(self, live: LiveSettings, paths: Layout, scripts: CheckScripts) -> None:
        self._live = live
        self.paths = paths
        self.scripts = scripts
        self.lock = threading.Lock()

    @property
    def netns(self) -> str:
        """The namespace keepalived runs in (it owns the VIP on eth1 there)."""
        return self._live.current.network_namespace

    def instance(self) -> keepalived.Instance:
        """How the VRRP keepalived is run."""
        p = self.paths
        return keepalived.Instance(
            config=p.vrrp(),
            pid_file=p.vrrp("octavia-keepalived.pid"),
            vrrp_pid_file=p.vrrp("octavia-keepalived.vrrp.pid"),
            check_pid_file=p.vrrp("octavia-keepalived.check.pid"),
            log_file=p.vrrp("octavia-keepalived.log"),
            netns=self.netns,
            log_facility=self._live.current.administrative_log_facility,
            child="vrrp",
        )

    @property
    def marker(self) -> Path:
        """Present while keepalived should run."""
        return self.paths.vrrp("running")

    def configured(self) -> bool:
        """Whether a VRRP config is stored."""
        return self.paths.vrrp().is_file()

    def is_running(self) -> bool:
        """Whether the main keepalived and its VRRP child run."""
        instance = self.instance()
        return keepalived.main_pid(instance) is not None and keepalived.child_alive(instance)

    def wants_running(self) -> bool:
        """Whether keepalived was last started (and not stopped)."""
        return self.marker.exists() and self.configured()

    # -- config -----------------------------------------------------------------------------
    def config_target(self) -> uploads.Destination:
        """Where an uploaded VRRP config goes (its temp file is written beside it)."""
        return uploads.Destination(self.paths.vrrp(), self.paths.base)

    def put_config(self, upload: uploads.Upload) -> config_text.Verdict:
        """Check with ``keepalived -t`` and store; nothing is (re)started. Fatal findings: 400."""
        with upload.contents() as body:
            text = decode(body)
        with self.lock:
            files.ensure_dir(self.paths.vrrp_dir, root=self.paths.base)
            self.scripts.refresh(force=True)  # the config names check_script.sh: it must exist first
            netns.ensure(self.netns)

            def check(staged: Path) -> config_text.Verdict:
                outside = confinement.problems(text, str(self.paths.base))
                if outside:  # refused before keepalived reads it
                    raise ConfigRejected("Invalid request", "\n".join(outside))
                output = keepalived.config_test(staged, self.netns)
                verdict = config_text.classify(output, extra_fatal=config_text.vrrp_problems(text))
                if not verdict.ok:
                    raise ConfigRejected("Invalid request", verdict.report())
                return verdict

            verdict = lifecycle.stage_check_commit(
                upload, self.paths.vrrp(), files.PUBLIC, check, root=self.paths.base
            )
        for line in verdict.warnings:
            LOG.warning("VRRP config accepted with a keepalived warning: %s", line)
        return verdict

    def get_config(self) -> bytes | None:
        """The stored config, if any."""
        try:
            return self.paths.vrrp().read_bytes()
        except FileNotFoundError:
            return None

    # -- actions ----------------------------------------------------------------------------
    def act(self, action: str) -> str:
        """start (a reload when running), reload (a start when stopped) or stop; the 202 details."""
        action = validation.action(action)
        with self.lock:
            if action == "stop":
                files.remove(self.marker, root=self.paths.base)
                self._stop()
                return "keepalived stoped"
            if not self.configured():
                raise CommandFailed(
                    f"Failed to {action} octavia-keepalived service",
                    "no VRRP configuration is stored (PUT /1.0/vrrp/upload first)",
                )
            files.atomic_write(self.marker, b"", files.PUBLIC, root=self.paths.base)
            self.scripts.refresh()
            pid = keepalived.main_pid(self.instance())
            if pid is not None and keepalived.child_alive(self.instance()):
                keepalived.reload(self.instance(), pid)
                LOG.info("keepalived (VRRP) reloaded")
                return "keepalived reloaded"
            self._start(f"Failed to {action} octavia-keepalived service")
            return "keepalived started"

    def _start(self, failure: str) -> None:
        files.ensure_dir(self.paths.vrrp_dir, root=self.paths.base)  # keepalived writes in there
        netns.ensure(self.netns)
        instance = self.instance()
        if keepalived.instance_pids(instance):  # a main without its child, or an orphaned child
            keepalived.stop(instance)
        pid = keepalived.start(instance, failure)
        LOG.info("keepalived (VRRP) started (pid %d)", pid)

    def _stop(self) -> None:
        try:
            keepalived.stop(self.instance())
        except CommandFailed as exc:
            raise CommandFailed("Failed to stop octavia-keepalived service", exc.details) from exc
        LOG.info("keepalived (VRRP) stopped")

    def ensure_running(self) -> bool:
        """Start keepalived if it should run and does not; return whether it started it."""

        def start() -> None:
            self.scripts.refresh()
            self._start("keepalived (VRRP) does not start")

        return lifecycle.start_if_wanted(
            self.lock, lambda: self.wants_running() and not self.is_running(), start
        )


def decode(body: bytes) -> str:
    """A config body as text: UTF-8 without control characters other than tab and newline."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("Invalid request", f"the configuration is not UTF-8: {exc}") from exc
    if "\x00" in text:
        raise InvalidInput("Invalid request", "the configuration contains a NUL byte")
    return text

"""UDP and SCTP listeners: one keepalived (IPVS, NAT) per listener, the same shape as haproxy and VRRP.

Where the kernel has no IPVS, keepalived's checker cannot start: the agent still validates and stores
configs, really tries to start keepalived, and reports every such listener as ERROR with that reason.
It never claims to forward.

The controller's configs always say ``net_namespace amphora-haproxy`` (a constant of its template).
The stored file stays byte for byte what the controller sent; where the agent's ``network_namespace``
has another name, keepalived runs a copy beside it (``<id>.run.conf``) whose only difference is
that line naming the agent's namespace.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amphora_agent import lifecycle, validation
from amphora_agent.errors import CommandFailed, ConfigRejected, NotFound
from amphora_agent.keepalived import config_text, confinement
from amphora_agent.keepalived.vrrp import CheckScripts, decode, install
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import ListenerState, LockTable
from amphora_agent.probes import health_checker
from amphora_agent.settings import ACTIVE_STANDBY, LiveSettings
from amphora_agent.system import announce, files, keepalived, netns, uploads

LOG = logging.getLogger(__name__)
EXEC_ONLY = 0o100  # the existing agent's mode for the health-check scripts
HEALTH_CHECKER = "amphora-health-checker"
NOT_RUNNING = "keepalived is not running for this listener (the agent is restarting it)"


@dataclass(frozen=True)
class LvsListenerStatus:
    """One LVS row of ``GET /1.0/listeners``: ACTIVE, OFFLINE or ERROR (with the reason)."""

    status: ListenerState
    uuid: str
    type: str
    reason: str | None = None


class LvsListeners:
    """``/1.0/listeners/.../udp_listener`` and the LVS side of the load balancer actions."""

    def __init__(self, live: LiveSettings, paths: Layout, scripts: CheckScripts, locks: LockTable) -> None:
        self._live = live
        self.paths = paths
        self._scripts = scripts
        self._locks = locks

    @property
    def netns(self) -> str:
        """The namespace the listeners' keepalived runs in."""
        return self._live.current.network_namespace

    def instance(self, listener_id: str) -> keepalived.Instance:
        """How one listener's keepalived is run (on the namespace copy when there is one)."""
        lvs, run = self.paths.lvs, self.paths.lvs_run(listener_id)
        return keepalived.Instance(
            config=run if os.path.lexists(run) else lvs(listener_id),
            pid_file=lvs(listener_id, "pid"),
            vrrp_pid_file=lvs(listener_id, "vrrp.pid"),
            check_pid_file=lvs(listener_id, "check.pid"),
            log_file=lvs(listener_id, "log"),
            netns=self.netns,
            log_facility=self._live.current.administrative_log_facility,
            child="check",
            path_prefix=self.paths.bin_dir,
        )

    def exists(self, listener_id: str) -> bool:
        """Whether a config is stored for ``listener_id`` (a link is none of ours)."""
        return files.is_real_file(self.paths.lvs(listener_id))

    def wants_running(self, listener_id: str) -> bool:
        """Whether the listener was last started (and not stopped)."""
        return self.paths.lvs(listener_id, "running").exists() and self.exists(listener_id)

    def is_running(self, listener_id: str) -> bool:
        """Whether the listener's keepalived and its checker run."""
        instance = self.instance(listener_id)
        return keepalived.main_pid(instance) is not None and keepalived.child_alive(instance)

    def _require(self, listener_id: str) -> None:
        if not self.exists(listener_id):
            raise NotFound("UDP Listener Not Found", f"No UDP listener with UUID: {listener_id}")

    # -- config -----------------------------------------------------------------------------
    def config_target(self, listener_id: str) -> uploads.Destination:
        """Where an uploaded config for ``listener_id`` goes (its temp file is written beside it)."""
        validation.object_id(listener_id, "listener")
        return uploads.Destination(self.paths.lvs(listener_id), self.paths.base)

    def put_config(self, amphora_id: str, listener_id: str, upload: uploads.Upload) -> config_text.Verdict:
        """Validate with keepalived itself and store; nothing is (re)started. Fatal findings: 400."""
        validation.object_id(amphora_id, "amphora")
        validation.object_id(listener_id, "listener")
        with upload.contents() as body:
            text = decode(body)
        root = self.paths.base
        with self._locks(listener_id):
            files.ensure_dir(self.paths.lvs_dir, root=root)
            files.ensure_dir(self.paths.udp_check.parent, root=root)
            install(self.paths.udp_check, config_text.UDP_CHECK_SH, EXEC_ONLY, root)
            self._install_health_checker()
            netns.ensure(self.netns)
            run = self.paths.lvs_run(listener_id)
            run_new = run.with_name(run.name + ".new")

            def check(staged: Path) -> config_text.Verdict:
                run_text = config_text.lvs_run_text(text, self.netns)
                if run_text is not None:  # what keepalived will run is what is checked
                    files.atomic_write(run_new, run_text.encode(), files.PUBLIC, root=root)
                verdict = self.validate(staged if run_text is None else run_new, run_text or text, text)
                if not verdict.ok:
                    raise ConfigRejected("Invalid request", verdict.report())
                return verdict

            try:
                verdict = lifecycle.stage_check_commit(
                    upload, self.paths.lvs(listener_id), files.PUBLIC, check, root=root
                )
                if os.path.lexists(run_new):
                    files.move(run_new, run, root=root)
                else:
                    files.remove(run, root=root)
            finally:
                files.remove(run_new, root=root)
        for line in verdict.warnings:
            LOG.warning("LVS config of %s accepted with a keepalived warning: %s", listener_id, line)
        self._scripts.refresh()
        return verdict

    def _install_health_checker(self) -> None:
        """The SCTP monitor's ``amphora-health-checker`` (an image executable), where the host lacks it."""
        if shutil.which(HEALTH_CHECKER) is not None:
            return
        files.ensure_dir(self.paths.bin_dir, root=self.paths.base)
        script = config_text.python_script_sh(sys.executable, Path(health_checker.__file__))
        install(self.paths.bin_dir / HEALTH_CHECKER, script, files.EXECUTABLE, self.paths.base)

    def validate(self, config: Path, text: str, sent: str | None = None) -> config_text.Verdict:
        """``keepalived -t`` on ``config`` (holding ``text``, derived from ``sent`` as the controller
        sent it); without IPVS (where -t skips ``virtual_server``) also a checker dry start."""
        try:
            parsed = config_text.parse_lvs(sent or text)
        except ValueError as exc:  # an address or port the agent cannot read: keepalived would not either
            return config_text.Verdict(fatal=(f"unreadable LVS config: {exc}",))
        outside = confinement.problems(sent or text, str(self.paths.base))
        if outside:  # refused before keepalived reads it
            return config_text.Verdict(fatal=tuple(outside))
        bin_dir = self.paths.bin_dir
        verdict = config_text.classify(
            keepalived.config_test(config, self.netns, bin_dir),
            extra_fatal=config_text.lvs_problems(sent or text, self.netns),
        )
        # the checker stops at IPVS only when it needs it; otherwise it would run until killed
        if keepalived.ipvs_unavailable() is None or not parsed.needs_ipvs:
            return verdict
        with tempfile.TemporaryDirectory(prefix=".dry-", dir=self.paths.lvs_dir) as scratch:
            output = keepalived.checker_dry_start(config, Path(scratch), self.netns, bin_dir)
        return verdict.merged(config_text.classify(output, dry_start=True))

    def get_config(self, listener_id: str) -> bytes:
        """The stored config."""
        validation.object_id(listener_id, "listener")
        try:
            return files.read_bytes(self.paths.lvs(listener_id), root=self.paths.base)
        except FileNotFoundError:
            self._require(listener_id)
            raise

    # -- actions ----------------------------------------------------------------------------
    def act(self, listener_id: str, action: str) -> str:
        """start, stop, or reload (a restart: member states must reset); the 202 details."""
        action = validation.action(action)
        validation.object_id(listener_id, "listener")
        self._require(listener_id)
        try:
            with self._locks(listener_id):
                details = self._act(listener_id, action)
        finally:
            self._scripts.refresh()
        if action != "stop":
            self.announce_vips(listener_id)
        return details

    def announce_vips(self, listener_id: str) -> None:
        """Gratuitous ARP / unsolicited NA for the listener's VIPs; keepalived does it in ACTIVE_STANDBY."""
        if self._live.current.loadbalancer_topology == ACTIVE_STANDBY:
            return
        try:
            config = config_text.parse_lvs(self.paths.lvs(listener_id).read_text())
        except (OSError, ValueError) as exc:  # deleted meanwhile, or not parsable
            LOG.info("no announcement for %s: %s", listener_id, exc)
            return
        for error in announce.announce_in(self.netns, [address for address, _ in config.vips]):
            LOG.info("announcement for %s skipped: %s", listener_id, error)

    def _act(self, listener_id: str, action: str) -> str:
        marker = self.paths.lvs(listener_id, "running")
        if action == "stop":
            files.remove(marker, root=self.paths.base)
            self._stop(listener_id, "Failed to stop keepalivedlvs listener")
            return f"keepalivedlvs listener {listener_id} stoped"
        verb = "restart" if action == "reload" else "start"
        files.atomic_write(marker, b"", files.PUBLIC, root=self.paths.base)
        if verb == "start" and self.is_running(listener_id):
            return f"keepalivedlvs listener {listener_id} started"
        self._start(listener_id, f"Failed to {verb} keepalivedlvs listener {listener_id}")
        return f"keepalivedlvs listener {listener_id} {verb}ed"

    def _sync_run_config(self, listener_id: str) -> str:
        """The namespace copy for the agent's namespace now (it may have another name than at upload);
        the stored config."""
        root, run = self.paths.base, self.paths.lvs_run(listener_id)
        stored = files.read_bytes(self.paths.lvs(listener_id), root=root).decode("utf-8")
        run_text = config_text.lvs_run_text(stored, self.netns)
        if run_text is None:
            files.remove(run, root=root)
        elif not files.is_real_file(run) or run.read_text() != run_text:
            files.atomic_write(run, run_text.encode(), files.PUBLIC, root=root)
        return stored

    def _start(self, listener_id: str, failure: str) -> None:
        files.ensure_dir(self.paths.lvs_dir, root=self.paths.base)  # keepalived writes in there
        stored = self._sync_run_config(listener_id)
        instance = self.instance(listener_id)
        if keepalived.instance_pids(instance):
            keepalived.stop(instance)
        netns.ensure(self.netns)
        reason = keepalived.ipvs_unavailable()
        try:
            doomed = reason is not None and config_text.parse_lvs(stored).needs_ipvs
        except ValueError:
            doomed = False  # keepalived will say what it thinks of it
        try:
            # without IPVS the checker dies, however slowly: wait for that, not for a quiet moment
            pid = keepalived.start(instance, failure, expect_exit=doomed)
        except CommandFailed as exc:
            if reason is None:
                raise
            raise CommandFailed(failure, f"{reason}\nkeepalived said:\n{exc.details}") from exc
        LOG.info("keepalived for LVS listener %s started (pid %d)", listener_id, pid)

    def _stop(self, listener_id: str, failure: str) -> None:
        try:
            keepalived.stop(self.instance(listener_id))
        except CommandFailed as exc:
            raise CommandFailed(failure, exc.details) from exc

    def delete(self, listener_id: str) -> None:
        """Stop keepalived and remove the config, pid files and log (absent is fine)."""
        validation.object_id(listener_id, "listener")
        with self._locks(listener_id):
            if not self.exists(listener_id):
                return
            files.remove(self.paths.lvs(listener_id, "running"), root=self.paths.base)
            self._stop(listener_id, "Error stopping keepalivedlvs")
            for suffix in ("conf", "run.conf", "log", "log.1", "conf.new-failed"):
                files.remove(self.paths.lvs(listener_id, suffix), root=self.paths.base)
        self._scripts.refresh()
        LOG.info("LVS listener %s deleted", listener_id)

    def ensure_running(self, listener_id: str) -> bool:
        """Start the listener if it should run and does not (never without IPVS)."""

        def should_start() -> bool:
            wanted = self.wants_running(listener_id) and not self.is_running(listener_id)
            return wanted and keepalived.ipvs_unavailable() is None

        def start() -> None:
            self._start(listener_id, f"keepalived for LVS listener {listener_id} does not start")

        return lifecycle.start_if_wanted(self._locks(listener_id), should_start, start)

    # -- status -----------------------------------------------------------------------------
    def listeners(self) -> list[LvsListenerStatus]:
        """Every LVS listener with its status; ERROR always carries the reason."""
        no_ipvs = keepalived.ipvs_unavailable()
        rows = []
        for listener_id in self.paths.lvs_ids():
            try:
                config = config_text.parse_lvs(self.paths.lvs(listener_id).read_text())
            except (OSError, ValueError):
                continue  # removed behind our back, or not parsable: nothing to report
            running = self.is_running(listener_id)
            if no_ipvs and config.has_virtual_server:
                rows.append(LvsListenerStatus("ERROR", listener_id, "UDP", no_ipvs))
            elif running and config.has_virtual_server:
                rows.append(LvsListenerStatus("ACTIVE", listener_id, "UDP"))
            elif self.wants_running(listener_id) and not running:
                rows.append(LvsListenerStatus("ERROR", listener_id, "UDP", NOT_RUNNING))
            else:
                rows.append(LvsListenerStatus("OFFLINE", listener_id, "UDP"))
        return rows

    def running_count(self) -> int:
        """How many LVS listeners have a live keepalived."""
        return sum(1 for listener_id in self.paths.lvs_ids() if self.is_running(listener_id))

"""Load balancers: one haproxy process per load balancer, its stored config, actions and listeners.

Every operation on one load balancer holds that load balancer's lock, so the controller's re-sent
requests and the supervisor never interleave.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from amphora_agent import errors, lifecycle, validation
from amphora_agent.errors import CommandFailed, ConfigRejected, InvalidInput, NotFound
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers import confinement, haproxy_config
from amphora_agent.settings import ACTIVE_STANDBY, LiveSettings
from amphora_agent.system import announce, files, haproxy, netns, uploads

LOG = logging.getLogger(__name__)
STARTED = "Configuration file is valid\nhaproxy daemon for {} started"
PEER_FILE = "peer-name"


# A row's status in ``GET /1.0/listeners``: haproxy rows are ACTIVE or STOPPED; LVS rows ACTIVE, OFFLINE
# (should not run) or ERROR (should run and does not, or no IPVS in the kernel).
ListenerState = Literal["ACTIVE", "STOPPED", "OFFLINE", "ERROR"]


@dataclass(frozen=True)
class ListenerStatus:
    """One row of ``GET /1.0/listeners``."""

    status: ListenerState  # ACTIVE while haproxy runs, STOPPED otherwise
    uuid: str
    type: str


class LockTable:
    """One lock per object id, created on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        """The lock of ``key``."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


BLOCK = 64 << 10  # a config is read in blocks of whole lines this big: memory stays small per upload


def config_blocks(path: Path) -> Iterator[tuple[bytes, bool]]:
    """``path`` in blocks that end at a newline (a line longer than BLOCK is cut), each with whether it
    starts inside a line."""
    continued, carry = False, b""
    with open(path, "rb") as source:
        while True:
            data = source.read(BLOCK)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < BLOCK:
                carry = data
                continue
            cut = cut or len(data)
            yield data[:cut], continued
            continued, carry = not data[:cut].endswith(b"\n"), data[cut:]
    if carry:
        yield carry, continued


def prepare_config(upload: uploads.Upload, target: uploads.Destination) -> uploads.Upload:
    """UTF-8 without control bytes, ``global`` group lines dropped: the upload itself when it has no
    group line, else a rewritten copy. Read in blocks, so a 16 MiB config costs well under 1 MiB here."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    groups = haproxy_config.GroupLines()
    rewrite = False
    try:
        for block, continued in config_blocks(upload.path):
            text = decoder.decode(block)
            line = haproxy_config.find_control_bytes(text)
            if line is not None:
                raise InvalidInput("Invalid request", f"control character on line {lines + line}")
            lines += text.count("\n")
            rewrite = rewrite or len(groups.strip(text, continued)) != len(text)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InvalidInput("Invalid request", f"the configuration is not UTF-8: {exc}") from exc
    if not rewrite:
        return upload
    groups = haproxy_config.GroupLines()
    copy = uploads.UploadWriter(target.path, target.root)
    try:
        for block, continued in config_blocks(upload.path):
            text = groups.strip(block.decode("utf-8", "surrogateescape"), continued)
            copy.write(text.encode("utf-8", "surrogateescape"))
        return copy.finish()
    except BaseException:
        copy.discard()
        raise


def user_group_text(group_names: Callable[[], set[str]] | None = None) -> bytes:
    """The image's user-group file: ``group haproxy`` where that group exists, else ``nogroup``."""
    import grp

    names = group_names() if group_names else {g.gr_name for g in grp.getgrall()}
    group = "haproxy" if "haproxy" in names and "nogroup" not in names else "nogroup"
    return f"global\n    group {group}\n".encode()


class LoadBalancers:
    """The haproxy side of the API, as plain values in and data out."""

    def __init__(self, settings: LiveSettings, layout: Layout, locks: LockTable | None = None):
        self._settings = settings
        self.layout = layout
        self.locks = locks or LockTable()

    # -- setup -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the base folders and the user-group file haproxy is always run with."""
        files.ensure_dir(self.layout.base)
        files.ensure_dir(self.layout.certs)
        if not self.layout.user_group.exists():
            files.atomic_write(self.layout.user_group, user_group_text(), files.PUBLIC)
        self._check_tuning()

    def _check_tuning(self) -> Path:
        """The last ``-f`` of every check (written again if someone removed or changed it)."""
        path = self.layout.check_tuning
        try:
            if files.read_bytes(path, root=self.layout.base) == haproxy.CHECK_TUNING:
                return path
        except (OSError, errors.UnsafePath):  # missing, or a link in its place: written anew
            pass
        files.atomic_write(path, haproxy.CHECK_TUNING, files.PUBLIC, root=self.layout.base)
        return path

    @property
    def netns(self) -> str:
        """The namespace haproxy runs in."""
        return self._settings.current.network_namespace

    def instance(self, lb_id: str, config: Path | None = None) -> haproxy.Instance:
        """How this load balancer's haproxy is checked and run."""
        return haproxy.Instance(
            cmd=self._settings.current.haproxy_cmd,
            config=config or self.layout.haproxy_cfg(lb_id),
            user_group=self.layout.user_group,
            pid_file=self.layout.pid_file(lb_id),
            master_socket=self.layout.master_socket(lb_id),
            peer_name=self._peer_name(lb_id),
            netns=self.netns,
        )

    def _peer_name(self, lb_id: str) -> str:
        try:
            return (self.layout.lb_dir(lb_id) / PEER_FILE).read_text().strip()
        except OSError:
            return haproxy_config.peer_name(self._settings.current.amphora_id or lb_id)

    # -- state ------------------------------------------------------------------------------
    def exists(self, lb_id: str) -> bool:
        """Whether a config is stored for ``lb_id`` (in a real folder: links are none of ours)."""
        return self.layout.has_config(lb_id)

    def master_pid(self, lb_id: str) -> int | None:
        """The live haproxy master of ``lb_id``, or None."""
        pid = haproxy.read_pid(self.layout.pid_file(lb_id))
        return pid if haproxy.is_running(pid, str(self.layout.haproxy_cfg(lb_id))) else None

    def is_running(self, lb_id: str) -> bool:
        """Whether haproxy runs for ``lb_id``."""
        return self.master_pid(lb_id) is not None

    def wants_running(self, lb_id: str) -> bool:
        """Whether ``lb_id`` was last started (and not stopped): the supervisor keeps it running."""
        return self.layout.desired_running(lb_id).exists()

    def _require(self, lb_id: str) -> None:
        if not self.exists(lb_id):
            raise NotFound("Loadbalancer Not Found", f"No loadbalancer with UUID: {lb_id}")

    # -- config -----------------------------------------------------------------------------
    def config_target(self, lb_id: str) -> uploads.Destination:
        """Where an uploaded config for ``lb_id`` goes (its temp file is written beside it)."""
        validation.object_id(lb_id, "loadbalancer")
        return uploads.Destination(self.layout.haproxy_cfg(lb_id), self.layout.base)

    def put_config(self, amphora_id: str, lb_id: str, upload: uploads.Upload) -> None:
        """Check an uploaded haproxy.cfg with ``haproxy -c`` and store it; nothing is (re)started."""
        validation.object_id(amphora_id, "amphora")
        validation.object_id(lb_id, "loadbalancer")
        prepared = prepare_config(upload, self.config_target(lb_id))
        try:
            self._store_config(amphora_id, lb_id, prepared)
        finally:
            prepared.discard()  # the rewritten copy, if one was made and not stored

    def _store_config(self, amphora_id: str, lb_id: str, data: uploads.Upload) -> None:
        peer = haproxy_config.peer_name(amphora_id)

        def check(staged: Path) -> None:
            self.check_config(lb_id, staged)

        with self.locks(lb_id):
            lb_dir = files.ensure_dir(self.layout.lb_dir(lb_id), root=self.layout.base)
            peer_file = lb_dir / PEER_FILE
            if not peer_file.is_file() or peer_file.read_text().strip() != peer:  # spare an fsync
                files.atomic_write(peer_file, peer.encode(), files.PUBLIC, root=self.layout.base)
            lifecycle.stage_check_commit(
                data, self.layout.haproxy_cfg(lb_id), files.PRIVATE, check, root=self.layout.base
            )

    def check_config(self, lb_id: str, staged: Path) -> None:
        """The checks a staged config must pass (400 otherwise), before ``haproxy -c`` runs it.

        Only the agent's own files (``confinement``); an SSL session cache the kernel can allocate
        (``haproxy -c`` itself skips that allocation); then haproxy's verdict.
        """
        found = self._foreign_files(lb_id, staged)
        if found:
            raise ConfigRejected("Invalid request", "\n".join(found))
        with open(staged, encoding="utf-8", errors="replace") as lines:
            entries = haproxy_config.ssl_session_cache(lines)
        limit = haproxy.allocation_limit() if entries else None
        if entries and limit is not None and entries * haproxy.SSL_CACHE_ENTRY_BYTES > limit:
            raise ConfigRejected(
                "Invalid request",
                f"[ALERT] tune.ssl.cachesize {entries} needs about "
                f"{entries * haproxy.SSL_CACHE_ENTRY_BYTES >> 20} MiB; this amphora can allocate "
                f"{limit >> 20} MiB at once: haproxy would fail with 'Unable to allocate SSL session cache'",
            )
        try:
            haproxy.check(self.instance(lb_id), config=staged, tuning=self._check_tuning())
        except CommandFailed as exc:
            raise ConfigRejected("Invalid request", exc.details) from exc

    def _foreign_files(self, lb_id: str, config: Path) -> list[str]:
        """What ``config`` names outside the agent's files (``confinement``), by line."""
        own = PurePosixPath(self.layout.stats_socket(lb_id)), PurePosixPath(self.layout.servers_state(lb_id))
        with open(config, encoding="utf-8", errors="replace") as lines:
            return confinement.problems(lines, *own)

    def _check_stored(self, lb_id: str) -> None:
        """A stored config is checked again before haproxy loads it: one stored by an older agent, or
        changed behind the agent's back, never makes haproxy create files outside the agent's folders."""
        found = self._foreign_files(lb_id, self.layout.haproxy_cfg(lb_id))
        if found:
            raise errors.UnsafePath(
                "Refusing the stored configuration",
                "it names files outside the agent's folders:\n" + "\n".join(found),
            )

    def get_config(self, lb_id: str) -> bytes:
        """The stored config."""
        validation.object_id(lb_id, "loadbalancer")
        try:
            return files.read_bytes(self.layout.haproxy_cfg(lb_id), root=self.layout.base)
        except FileNotFoundError:
            self._require(lb_id)
            raise

    # -- actions ----------------------------------------------------------------------------
    def act(self, lb_id: str, action: str) -> str:
        """start, stop or reload; returns the ``details`` of the 202 the controller expects."""
        action = validation.action(action)
        validation.object_id(lb_id, "loadbalancer")
        self._require(lb_id)
        with self.locks(lb_id):
            if action == "stop":
                self._stop(lb_id)
                return f"Listener {lb_id} stoped"
            files.atomic_write(self.layout.desired_running(lb_id), b"", files.PUBLIC, root=self.layout.base)
            pid = self.master_pid(lb_id)
            details = STARTED.format(lb_id)
            if pid is None:
                self._start(lb_id)
            elif action == "reload":
                self._reload(lb_id, pid)
                details = f"Listener {lb_id} reloaded"
        self._announce(lb_id)
        return details

    def _announce(self, lb_id: str) -> None:
        """Gratuitous ARP / unsolicited NA for the bind addresses; keepalived does it in ACTIVE_STANDBY."""
        if self._settings.current.loadbalancer_topology == ACTIVE_STANDBY:
            return
        try:
            config = haproxy_config.parse_haproxy_config(self.layout.haproxy_cfg(lb_id).read_text())
        except OSError as exc:  # deleted meanwhile
            LOG.info("no announcement for %s: %s", lb_id, exc)
            return
        binds = tuple(bind for frontend in config.frontends for bind in frontend.binds)
        for error in announce.announce_in(self.netns, haproxy_config.bind_addresses(binds)):
            LOG.info("announcement for %s skipped: %s", lb_id, error)

    def _start(self, lb_id: str) -> None:
        files.ensure_dir(self.layout.lb_dir(lb_id), root=self.layout.base)  # haproxy writes in there
        self._check_stored(lb_id)
        netns.ensure(self.netns)
        stray = haproxy.masters_by_config(self.layout.base).get(self.layout.haproxy_cfg(lb_id))
        if stray is not None:  # its pid file went behind our back: two masters would share the ports
            LOG.warning("haproxy for %s (master %d) ran without its pid file: stopped it first", lb_id, stray)
            haproxy.stop(stray)
        state = haproxy.start(self.instance(lb_id))
        LOG.info("haproxy for %s started (master %d)", lb_id, state.master_pid)

    def _reload(self, lb_id: str, pid: int) -> None:
        self._check_stored(lb_id)
        # the agent's own socket and state file: a stored config names no others (confinement)
        socket, state_file = self.layout.stats_socket(lb_id), self.layout.servers_state(lb_id)
        if not haproxy.save_server_state(socket, state_file, root=self.layout.base):
            LOG.warning("could not save the servers state of %s before reloading", lb_id)
        haproxy.reload(self.instance(lb_id), pid)
        LOG.info("haproxy for %s reloaded", lb_id)

    def _stop(self, lb_id: str) -> None:
        files.remove(self.layout.desired_running(lb_id), root=self.layout.base)
        pid = self.master_pid(lb_id)
        if pid is not None:
            haproxy.stop(pid)
            LOG.info("haproxy for %s stopped", lb_id)
        files.remove(self.layout.pid_file(lb_id), root=self.layout.base)

    def delete(self, lb_id: str) -> None:
        """Stop haproxy and remove the config, certificates, sockets and state (absent is fine)."""
        validation.object_id(lb_id, "listener")
        with self.locks(lb_id):
            if not self.exists(lb_id):  # never stored, deleted already, removed behind our back, a link
                self._delete_remains(lb_id)
                return
            self._stop(lb_id)
            self._remove_files(lb_id)
            LOG.info("load balancer %s deleted", lb_id)

    def _remove_files(self, lb_id: str) -> None:
        """The agent's own files of ``lb_id``, whatever its config names; a link goes, never its target."""
        files.remove(self.layout.stats_socket(lb_id), root=self.layout.base)
        files.remove_tree(self.layout.cert_dir(lb_id), root=self.layout.certs)
        files.remove_tree(self.layout.lb_dir(lb_id), root=self.layout.base)

    def _delete_remains(self, lb_id: str) -> None:
        """Delete what is left of a load balancer whose config is gone: its haproxy and its folder."""
        pid = self.master_pid(lb_id) or haproxy.masters_by_config(self.layout.base).get(
            self.layout.haproxy_cfg(lb_id)
        )
        if pid is None and not os.path.lexists(self.layout.lb_dir(lb_id)):
            return  # nothing here: deleting is a no-op (tenant certificates uploaded first are kept)
        if pid is not None:
            haproxy.stop(pid)
        self._remove_files(lb_id)
        LOG.warning(
            "load balancer %s deleted (its configuration had been removed; haproxy pid %s)", lb_id, pid
        )

    def orphans(self) -> dict[str, str]:
        """Load balancers whose config was removed behind the agent's back: id -> what is left of them."""
        stored = set(self.layout.lb_ids())
        found = {}
        for config, pid in haproxy.masters_by_config(self.layout.base).items():
            lb_id = config.parent.name
            if config == self.layout.haproxy_cfg(lb_id) and lb_id not in stored:
                found[lb_id] = f"its haproxy (master {pid}) still runs, unsupervised"
        for marker in self.layout.base.glob(
            str(self.layout.desired_running("*").relative_to(self.layout.base))
        ):
            lb_id = marker.parent.name
            # only load balancer folders: ``vrrp/running`` is keepalived's marker, not an orphan
            ours = validation.is_object_id(lb_id) and files.is_real_dir(marker.parent)
            if ours and lb_id not in stored and lb_id not in found:
                found[lb_id] = "it should run, but cannot be started"
        return found

    def ensure_running(self, lb_id: str) -> bool:
        """Start ``lb_id`` if it should run and does not; return whether it started it."""
        return lifecycle.start_if_wanted(
            self.locks(lb_id),
            lambda: self.wants_running(lb_id) and not self.is_running(lb_id) and self.exists(lb_id),
            lambda: self._start(lb_id),
        )

    # -- listeners --------------------------------------------------------------------------
    def listeners(self) -> list[ListenerStatus]:
        """Every listener of every stored config, ACTIVE while its haproxy runs."""
        rows: list[ListenerStatus] = []
        for lb_id in self.layout.lb_ids():
            try:
                config = haproxy_config.parse_haproxy_config(
                    files.read_bytes(self.layout.haproxy_cfg(lb_id), root=self.layout.base).decode()
                )
            except (OSError, UnicodeDecodeError, errors.UnsafePath):
                continue  # removed (or replaced by a link) behind our back between listing and reading
            status: ListenerState = "ACTIVE" if self.is_running(lb_id) else "STOPPED"
            rows.extend(
                ListenerStatus(status, f.id, f.type)
                for f in config.frontends
                if f.id != haproxy_config.PROMETHEUS_FRONTEND
            )
        return rows

    def running_count(self) -> int:
        """How many load balancers have a live haproxy."""
        return sum(1 for lb_id in self.layout.lb_ids() if self.is_running(lb_id))

"""Health heartbeats: the version 3 stats message (pure) and the task that signs and sends one per interval.

Every ``heartbeat_interval`` seconds one UDP datagram goes to the next controller of
``controller_ip_port_list`` (round robin). It lists every listener with its status and counters (tx, rx,
totconns and ereq as deltas since the previous beat, conns as current) and every pool with its members,
read from the stats socket of each running haproxy and from the LVS source. The counters and the
sequence number are persisted, so deltas and ``seq`` stay right across agent restarts. The settings are
read on every beat, so ``PUT /1.0/config`` takes effect on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from amphora_agent.errors import AgentError
from amphora_agent.health import codec, samples
from amphora_agent.health.samples import Counters, LvsSource, Sample
from amphora_agent.health.targets import Targets
from amphora_agent.layout import Layout
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.system import files, haproxy

LOG = logging.getLogger(__name__)
MESSAGE_VERSION = 3
COUNTERS_FILE = "stats_counters.json"
SEQ_FILE = "heartbeat_seq"
STATS_TIMEOUT = 2.0
RETRY_DELAY = 0.05  # one retry when a socket is briefly missing, e.g. during a reload
MIN_INTERVAL = 1.0
NO_CONTROLLER = "No controller address found. Unable to send heartbeat."


# -- the message (pure) -------------------------------------------------------------------------
def build_message(
    amphora_id: str, seq: int, sample: Sample, counters: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, Any], Counters]:
    """The version 3 message for ``sample`` and the absolute counters to keep for the next beat."""
    listeners: dict[str, Any] = {}
    kept: Counters = {} if sample.complete else {k: dict(v) for k, v in counters.items()}
    for listener_id, listener in sample.listeners.items():
        last = counters.get(listener_id)
        # unreadable counters report no traffic and keep the last values, so nothing is counted twice
        current = listener.counters() if listener.counted or last is None else dict(last)
        delta = samples.deltas(current, last) if listener.counted else dict.fromkeys(current, 0)
        listeners[listener_id] = {
            "status": listener.status,
            "stats": {
                "tx": delta["bout"],
                "rx": delta["bin"],
                "conns": listener.scur,
                "totconns": delta["stot"],
                "ereq": delta["ereq"],
            },
        }
        kept[listener_id] = current
    pools = {k: {"status": pool.status, "members": dict(pool.members)} for k, pool in sample.pools.items()}
    message = {"id": amphora_id, "seq": seq, "listeners": listeners, "pools": pools, "ver": MESSAGE_VERSION}
    return message, kept


# -- what the sender reads ----------------------------------------------------------------------
def keepalived_down(layout: Layout) -> str | None:
    """Why no heartbeat may go out (keepalived configured but not alive), or None."""
    if not layout.vrrp().exists():
        return None
    pid_file = layout.vrrp("octavia-keepalived.pid")
    pid = haproxy.read_pid(pid_file)
    if pid is None:
        return f"keepalived is configured but {pid_file} is missing or unreadable"
    if not haproxy.is_running(pid, "keepalived"):
        return f"keepalived is configured but not running (pid {pid})"
    return None


def _lb_sample(stats_socket: Path, lb_id: str, timeout: float) -> Sample:
    error: Exception | None = None
    for attempt in range(2):
        if attempt:
            time.sleep(RETRY_DELAY)
        try:
            return samples.sample_from_answer(
                haproxy.stats_query(stats_socket, samples.SHOW_STAT_ALL, timeout)
            )
        except (OSError, samples.StatsError) as exc:
            error = exc
    LOG.warning("no statistics from load balancer %s this beat: %s", lb_id, error)
    return Sample(complete=False)


def collect_haproxy(
    layout: Layout, is_running: Callable[[str], bool], timeout: float = STATS_TIMEOUT
) -> Sample:
    """Listeners and pools of every running haproxy; a load balancer that does not answer adds nothing."""
    listeners: dict[str, samples.ListenerSample] = {}
    pools: dict[str, samples.PoolSample] = {}
    complete = True
    for lb_id in layout.lb_ids():
        if not is_running(lb_id):
            continue
        sample = _lb_sample(layout.stats_socket(lb_id), lb_id, timeout)
        listeners.update(sample.listeners)
        pools.update(sample.pools)
        complete = complete and sample.complete
    return Sample(listeners, pools, complete)


class HeartbeatState:
    """Last absolute counters and last sequence number, persisted under ``base_path``."""

    def __init__(self, base: Path) -> None:
        self.counters_path = base / COUNTERS_FILE
        self.seq_path = base / SEQ_FILE
        self.counters = self._load_counters()
        self.next_seq = self._load_seq() + 1
        self._unsaved = False

    def _load_counters(self) -> Counters:
        try:
            return samples.parse_counters(json.loads(self.counters_path.read_bytes()))
        except (OSError, ValueError):
            return {}  # missing or corrupt: start from zero, as the existing agent does

    def _load_seq(self) -> int:
        try:
            return max(int(self.seq_path.read_text().strip()), -1)
        except (OSError, ValueError):
            return -1

    def save(self, seq: int, counters: Counters) -> None:
        """Remember what was sent; a failed write is logged, never a reason to stay silent."""
        stale = self._unsaved or counters != self.counters
        self.counters, self.next_seq = counters, seq + 1
        try:
            files.atomic_write(self.seq_path, f"{seq}\n".encode(), files.GROUP_READ)
            if stale:
                files.atomic_write(self.counters_path, json.dumps(counters).encode(), files.GROUP_READ)
            self._unsaved = False
        except (OSError, AgentError) as exc:  # DiskFull is an AgentError
            self._unsaved = True
            LOG.warning("heartbeat counters not persisted: %s", exc)


# -- the sender ---------------------------------------------------------------------------------
class HeartbeatSender:
    """Builds, signs and sends heartbeats; ``run`` is the agent's task, ``beat_once`` one cycle."""

    def __init__(
        self,
        live: LiveSettings,
        layout: Layout,
        is_running: Callable[[str], bool],
        lvs: LvsSource = samples.no_lvs,
    ) -> None:
        self._live = live
        self._layout = layout
        self._is_running = is_running
        self._lvs = lvs
        self.state = HeartbeatState(layout.base)
        self._targets = Targets()
        self._sockets: dict[int, socket.socket] = {}
        self._silence: str | None = None

    def silence_reason(self, settings: Settings) -> str | None:
        """Why this beat must not go out, or None."""
        if not settings.amphora_id:
            return "heartbeat not sent: [amphora_agent] amphora_id is not set"
        if not settings.heartbeat_key:
            return "heartbeat not sent: [health_manager] heartbeat_key is not set"
        down = keepalived_down(self._layout)
        return f"heartbeat not sent: {down}" if down else None

    def _note(self, reason: str | None) -> None:
        if reason != self._silence:
            if reason is not None:
                LOG.warning("%s", reason)
            elif self._silence is not None:
                LOG.info("heartbeats resume")
        self._silence = reason

    def collect(self) -> Sample:
        """haproxy listeners followed by LVS listeners, as the message lists them."""
        haproxy = collect_haproxy(self._layout, self._is_running)
        try:
            lvs = self._lvs()
        except Exception as exc:  # a reader bug must not silence the haproxy listeners
            LOG.warning("no LVS statistics this beat: %s", exc)
            lvs = Sample(complete=False)
        return haproxy.merged(lvs)

    def build(self, amphora_id: str, key: str) -> bytes:
        """Collect, build and sign the next heartbeat, and persist its counters and ``seq``."""
        seq = self.state.next_seq
        message, counters = build_message(amphora_id, seq, self.collect(), self.state.counters)
        datagram = codec.wrap(codec.encode(message), key)
        self.state.save(seq, counters)
        return datagram

    def beat_once(self) -> bytes | None:
        """One cycle: gate, build, send to the next controller; the datagram, or None when silent."""
        settings = self._live.current
        amphora_id, key = settings.amphora_id, settings.heartbeat_key
        reason = self.silence_reason(settings)
        target = None if reason else self._targets.next(settings.controller_ip_port_list)
        if reason is None and target is None:
            reason = NO_CONTROLLER
        self._note(reason)
        if target is None or not amphora_id or not key:
            return None
        datagram = self.build(amphora_id, key)
        self._send(target, datagram)
        return datagram

    def _send(self, target: tuple[int, Any], datagram: bytes) -> None:
        family, address = target
        try:
            sock = self._sockets.get(family)
            if sock is None:
                sock = self._sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.sendto(datagram, address)
        except OSError as exc:  # as in the existing agent: a lost beat is not an error
            LOG.debug("heartbeat to %s not sent: %s", address, exc)

    def interval(self) -> float:
        """Seconds between beats, read now."""
        return max(float(self._live.current.heartbeat_interval), MIN_INTERVAL)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat at once, then every interval, until ``stop`` is set; a config change re-times the wait."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake(_new: Settings) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(changed.set)

        self._live.subscribe(wake)
        try:
            while not stop.is_set():
                started = loop.time()
                try:
                    await asyncio.to_thread(self.beat_once)
                except Exception:  # the loop must outlive any single failure
                    LOG.exception("heartbeat failed")
                while not stop.is_set():
                    changed.clear()  # before reading the interval, so no change slips through
                    left = started + self.interval() - loop.time()
                    if left <= 0:
                        break
                    await _first_of(left, stop, changed)
        finally:
            self.close()

    def close(self) -> None:
        """Close the sending sockets (the next beat opens them again)."""
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


async def _first_of(timeout: float, *events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

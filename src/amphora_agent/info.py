"""``/info`` and ``/1.0/details``: versions and host figures, with the existing agent's keys and types."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amphora_agent import __version__
from amphora_agent.errors import CommandFailed
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.settings import LiveSettings
from amphora_agent.system import netns, proc

API_VERSION = "1.0"
TUNED_PROFILE = Path("/etc/tuned/active_profile")
PACKAGES = ("haproxy", "keepalived", "ipvsadm", "openssl", "iproute2", "nftables")


def package_version(name: str) -> str:
    """The installed package version (dpkg, else rpm), epoch dropped; "" when not installed."""
    for argv in (
        ["dpkg-query", "-W", "-f=${Version}", name],
        ["rpm", "-q", "--queryformat", "%{VERSION}", name],
    ):
        try:
            out = proc.run(argv, timeout=10).strip()
        except CommandFailed:
            continue
        if out:
            return out.split(":", 1)[-1]
    return ""


def haproxy_binary_version(cmd: Path) -> str:
    """``2.6.12`` from ``haproxy -v`` when no package manager knows haproxy."""
    try:
        first = proc.run([str(cmd), "-v"], timeout=10).splitlines()[0]
    except (CommandFailed, IndexError):
        return ""
    match = re.search(r"version (\d+\.\d+[^\s]*)", first)
    return match[1] if match else ""


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in kB, keyed as the existing agent reports them (swap_used is SwapCached)."""
    raw = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            raw[name] = int(fields[0])
    keys = {
        "total": "MemTotal",
        "free": "MemFree",
        "available": "MemAvailable",
        "buffers": "Buffers",
        "cached": "Cached",
        "swap_used": "SwapCached",
        "shared": "Shmem",
        "slab": "Slab",
        "committed_as": "Committed_AS",
    }
    return {key: raw.get(name, 0) for key, name in keys.items()}


def parse_cpu(text: str) -> dict[str, Any]:
    """The ``cpu`` line of /proc/stat: total as int, user/system/soft_irq as strings (jiffies)."""
    fields = text.splitlines()[0].split()[1:]
    return {
        "total": sum(int(f) for f in fields),
        "user": fields[0],
        "system": fields[2],
        "soft_irq": fields[6],
    }


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev: interface -> (tx bytes, rx bytes)."""
    counters = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            counters[name.strip()] = (int(fields[8]), int(fields[0]))
    return counters


class NetworkRates:
    """Per-interface byte counters in the haproxy namespace, and rates between two samples."""

    MIN_INTERVAL = 1.0

    def __init__(self, read: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, tuple[int, int]]] | None = None
        self._rates: dict[str, tuple[float, float]] = {}

    def sample(self) -> dict[str, dict[str, float]]:
        """``{ifname: {network_tx, network_rx, network_tx_rate, network_rx_rate}}`` for eth* links."""
        try:
            now, counters = time.monotonic(), self._read()
        except OSError:
            return {}
        with self._lock:
            last = self._last
            if last is None or now - last[0] >= self.MIN_INTERVAL:
                if last is not None:
                    span = now - last[0]
                    self._rates = {
                        name: (
                            max(0, tx - last[1].get(name, (tx, rx))[0]) / span,
                            max(0, rx - last[1].get(name, (tx, rx))[1]) / span,
                        )
                        for name, (tx, rx) in counters.items()
                    }
                self._last = (now, counters)
            rates = self._rates
        return {
            name: {
                "network_tx": tx,
                "network_rx": rx,
                "network_tx_rate": round(rates.get(name, (0.0, 0.0))[0], 1),
                "network_rx_rate": round(rates.get(name, (0.0, 0.0))[1], 1),
            }
            for name, (tx, rx) in sorted(counters.items())
            if name.startswith("eth")
        }


def read_text(path: str | Path, limit: int = 1 << 20) -> str:
    """A small file's text, or "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return ""


class HostInfo:
    """Answers /info and /details. Package versions are read once: they change only on upgrade."""

    def __init__(
        self,
        live: LiveSettings,
        lbs: LoadBalancers,
        extra_details: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._live = live
        self._lbs = lbs
        self._extra_details = extra_details  # e.g. LVS listeners and the topology status
        self._versions: dict[str, str] | None = None
        self._rates = NetworkRates(self._read_netns_counters)

    def _read_netns_counters(self) -> dict[str, tuple[int, int]]:
        name = self._live.current.network_namespace
        if not netns.exists(name):
            return {}
        return netns.call_in(name, lambda: parse_net_dev(read_text("/proc/thread-self/net/dev")))

    def versions(self) -> dict[str, str]:
        """Package versions, cached; haproxy falls back to the binary's own version."""
        if self._versions is None:
            found = {name: package_version(name) for name in PACKAGES}
            if not found["haproxy"]:
                found["haproxy"] = haproxy_binary_version(self._live.current.haproxy_cmd)
            self._versions = found
        return self._versions

    def info(self) -> dict[str, Any]:
        """The /info body: the controller takes ``haproxy_version.split('.')[:2]`` as ints."""
        versions = self.versions()
        return {
            "hostname": socket.gethostname(),
            "uuid": self._live.current.amphora_id,
            "haproxy_version": versions["haproxy"],
            "api_version": API_VERSION,
            "keepalived_version": versions["keepalived"],
            "ipvsadm_version": versions["ipvsadm"],
            "agent_version": __version__,
        }

    def details(self) -> dict[str, Any]:
        """The /1.0/details body: every key of the spec and of the existing agent."""
        settings = self._live.current
        disk = os.statvfs("/")
        body = self.info()
        body.update(
            {
                "networks": self._rates.sample(),
                "active": True,
                "haproxy_count": self._lbs.running_count(),
                "cpu_count": os.cpu_count() or 1,
                "cpu": parse_cpu(read_text("/proc/stat", 4096)),
                "memory": parse_meminfo(read_text("/proc/meminfo")),
                "disk": {
                    "used": (disk.f_blocks - disk.f_bfree) * disk.f_frsize,
                    "available": disk.f_bavail * disk.f_frsize,
                },
                "load": read_text("/proc/loadavg").split()[:3],
                "active_tuned_profiles": read_text(TUNED_PROFILE, 1024).strip(),
                "topology": settings.loadbalancer_topology,
                "topology_status": "OK",
                "listeners": sorted({row.uuid for row in self._lbs.listeners()}),
                "packages": {name: version for name, version in self.versions().items() if version},
                "lvs_listener_process_count": 0,
            }
        )
        if self._extra_details is not None:
            self._extra_details(body)
        return body

"""Two amphorae sharing a VIP network, for keepalived VRRP tests and the failover benchmark.

A "switch" namespace holds a Linux bridge: each amphora's haproxy namespace gets a port named ``eth1``
carrying its ``vrrp_ip``, and the calling namespace gets one carrying the client and member addresses.
The addresses are those of the controller fixtures (amp-a 198.51.100.141 MASTER, amp-b .142 BACKUP,
VIP .140 on 198.51.100.128/25), so the controller's keepalived configs are used nearly unchanged: only
the base path and, where asked, the timers are substituted. Everything goes through the agents' API;
the plug calls are not used (the wiring is done here).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab import namespaces
from lab.configs import CONTROLLER_FIXTURES

VIP = "198.51.100.140"
VRRP_IPS = ("198.51.100.141", "198.51.100.142")
PREFIX = 25
CLIENT_IP = "198.51.100.130"
MEMBER_IPS = ("198.51.100.150", "198.51.100.151")
LB_ID = "1255f924-18da-44a0-aad7-23512f2c0594"  # the VRRP fixtures' load balancer
KEEPALIVED_FIXTURES = ("vrrp-master.conf", "vrrp-backup.conf")


def default_fixtures() -> Path:
    """The controller fixtures vendored in the repository."""
    return CONTROLLER_FIXTURES


@dataclass(frozen=True)
class Timers:
    """keepalived timers: the controller's defaults, or faster ones."""

    name: str = "controller default"
    advert_int: float = 1
    interval: int = 5
    fall: int = 2
    rise: int = 2
    vrrp_version: int = 2  # VRRPv3 allows sub-second adverts but no authentication


DEFAULT_TIMERS = Timers()
FAST_TIMERS = Timers("fastest VRRPv2 (the controller's config)", 1, 1, 1, 1)


def keepalived_config(
    fixtures: Path, index: int, base: Path, timers: Timers = DEFAULT_TIMERS, release: str = ""
) -> bytes:
    """The controller's VRRP config of amphora ``index`` (0 MASTER, 1 BACKUP) for this base path;
    ``release`` picks an older controller's rendering (``14.0.0``: ``state`` with ``nopreempt``)."""
    name = KEEPALIVED_FIXTURES[index]
    text = (
        fixtures / "keepalived" / (name.replace(".conf", f"-{release}.conf") if release else name)
    ).read_text()
    text = text.replace("/var/lib/octavia", str(base))
    text = re.sub(r"(?m)^(\s+)interval \d+$", rf"\g<1>interval {timers.interval}", text)
    text = re.sub(r"(?m)^(\s+)fall \d+$", rf"\g<1>fall {timers.fall}", text)
    text = re.sub(r"(?m)^(\s+)rise \d+$", rf"\g<1>rise {timers.rise}", text)
    text = re.sub(r"(?m)^(\s+)advert_int \S+$", rf"\g<1>advert_int {timers.advert_int:g}", text)
    if timers.vrrp_version == 3:
        text = re.sub(r"\n\s+authentication \{[^}]*\}\n", "\n", text)
        text = "global_defs {\n    vrrp_version 3\n}\n\n" + text
    return text.encode()


def haproxy_config(fixtures: Path, base: Path) -> bytes:
    """The controller's single-HTTP load balancer moved onto the pair's VIP and members."""
    text = (fixtures / "haproxy" / "single-http.cfg").read_text()
    text = text.replace("0fea25e0-f190-4bc0-94ec-e5cd2d8994b6", LB_ID)
    text = text.replace("198.51.100.10:80", f"{VIP}:80")
    text = text.replace("203.0.113.11:80", f"{MEMBER_IPS[0]}:80").replace(
        "203.0.113.12:80", f"{MEMBER_IPS[1]}:80"
    )
    return text.replace("/var/lib/octavia", str(base)).encode()


class VipSwitch:
    """A namespace with a Linux bridge: the L2 network the amphorae's eth1 and the client share."""

    def __init__(self) -> None:
        self.index = next(namespaces._counter)
        self.name = f"sw{os.getpid() % 100000}-{self.index}"
        self.caller_link: str | None = None

    def create(self) -> VipSwitch:
        """Make the namespace and its bridge."""
        namespaces.sh("ip", "netns", "add", self.name)
        namespaces.sh("ip", "-n", self.name, "link", "set", "lo", "up")
        namespaces.sh("ip", "-n", self.name, "link", "add", "br0", "type", "bridge")
        namespaces.sh("ip", "-n", self.name, "link", "set", "br0", "up")
        return self

    def _port(self, link: str) -> None:
        namespaces.sh("ip", "-n", self.name, "link", "set", link, "master", "br0")
        namespaces.sh("ip", "-n", self.name, "link", "set", link, "up")

    def attach(self, netns: str, cidrs: list[str], ifname: str = "eth1") -> None:
        """A port whose far end is ``ifname`` in ``netns``, up, holding ``cidrs``."""
        port = f"p{next(namespaces._counter)}"
        namespaces.sh(
            "ip", "-n", self.name, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns
        )
        self._port(port)
        for cidr in cidrs:
            namespaces.sh("ip", "-n", netns, "addr", "add", cidr, "dev", ifname, "nodad")
        namespaces.sh("ip", "-n", netns, "link", "set", ifname, "up")

    def attach_caller(self, cidrs: list[str]) -> str:
        """A port into the calling namespace (clients and members run here); returns our link."""
        link = f"c{os.getpid() % 100000}x{self.index}"
        namespaces.sh("ip", "link", "add", link, "type", "veth", "peer", "name", "pc", "netns", self.name)
        self._port("pc")
        for cidr in cidrs:
            namespaces.sh("ip", "addr", "add", cidr, "dev", link, "nodad")
        namespaces.sh("ip", "link", "set", link, "up")
        self.caller_link = link
        return link

    def destroy(self) -> None:
        """Delete our link and the switch namespace (with every port in it)."""
        if self.caller_link:
            namespaces.sh("ip", "link", "del", self.caller_link, check=False)
        namespaces.sh("ip", "netns", "del", self.name, check=False)


@dataclass
class Pair:
    """Two amphorae (agents running) on one VIP network, and the members behind them."""

    workdir: Path
    fixtures: Path = field(default_factory=default_fixtures)
    timers: Timers = DEFAULT_TIMERS
    amphorae: list[namespaces.Amphora] = field(default_factory=list)
    switch: VipSwitch = field(default_factory=VipSwitch)
    members: namespaces.Backends = field(default_factory=namespaces.Backends)

    def create(self) -> Pair:
        """Namespaces, agents (topology ACTIVE_STANDBY), the switch, the client link and members."""
        self.switch.create()
        for index, vrrp_ip in enumerate(VRRP_IPS):
            amp = namespaces.Amphora(
                self.workdir / f"amp{index}",
                extra_config={"controller_worker": {"loadbalancer_topology": "ACTIVE_STANDBY"}},
            )
            self.amphorae.append(amp)
            amp.create()
            amp.start_agent()  # it creates its haproxy namespace
            for key in ("net.ipv4.ip_nonlocal_bind", "net.ipv6.ip_nonlocal_bind"):  # the image's sysctl
                namespaces.sh("sysctl", "-qw", f"{key}=1", netns=amp.haproxy_ns)
            self.switch.attach(amp.haproxy_ns, [f"{vrrp_ip}/{PREFIX}"])
        self.switch.attach_caller([f"{ip}/{PREFIX}" for ip in (CLIENT_IP, *MEMBER_IPS)])
        for number, address in enumerate(MEMBER_IPS, 1):
            self.members.start(address, 80, f"member-{number}")
        return self

    def configure(self, index: int) -> None:
        """What the controller sends one amphora: haproxy config + reload, then the VRRP config."""
        amp = self.amphorae[index]
        with amp.client() as api:
            api.put(
                f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy",
                content=haproxy_config(self.fixtures, amp.base),
            ).raise_for_status()
            api.put(f"/1.0/loadbalancer/{LB_ID}/reload").raise_for_status()
            body = keepalived_config(self.fixtures, index, amp.base, self.timers)
            api.put("/1.0/vrrp/upload", content=body).raise_for_status()

    def vrrp(self, index: int, action: str) -> str:
        """``PUT /1.0/vrrp/<action>`` on one amphora; the reply's details."""
        with self.amphorae[index].client() as api:
            reply = api.put(f"/1.0/vrrp/{action}")
            reply.raise_for_status()
            return str(reply.json()["details"])

    def holds_vip(self, index: int) -> bool:
        """Whether amphora ``index`` has the VIP on its eth1."""
        out = namespaces.sh(
            "ip", "-4", "-o", "addr", "show", "dev", "eth1", netns=self.amphorae[index].haproxy_ns
        )
        return f" {VIP}/" in out

    def master(self) -> int | None:
        """The amphora holding the VIP (None when neither or both do)."""
        holders = [i for i in range(len(self.amphorae)) if self.holds_vip(i)]
        return holders[0] if len(holders) == 1 else None

    def start(self, timeout: float = 20.0) -> int:
        """Configure both, start amp-a's keepalived and wait until it is MASTER, then amp-b's."""
        for index in range(len(self.amphorae)):
            self.configure(index)
        self.vrrp(0, "start")
        if not namespaces.wait_until(lambda: self.master() == 0, timeout, 0.05):
            raise RuntimeError("amp-a never became MASTER")
        self.vrrp(1, "start")
        if not namespaces.wait_until(lambda: ok(VIP), timeout, 0.05):
            raise RuntimeError("the VIP never answered")
        return 0

    def destroy(self) -> None:
        """Agents, haproxy and keepalived (by PID), members, namespaces and links."""
        for amp in self.amphorae:
            amp.destroy()
        self.members.stop()
        self.switch.destroy()


def ok(host: str, port: int = 80, timeout: float = 0.5) -> bool:
    """One HTTP GET on a new connection answered 200 (within ``timeout`` per step)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            return head.split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


class Prober:
    """Requests to the VIP every ``period`` seconds from a thread; records when they succeeded."""

    def __init__(
        self, host: str = VIP, period: float = 0.02, timeout: float = 0.25, max_seconds: float = 180.0
    ):
        self.host = host
        self.period = period
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.successes: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            if ok(self.host, timeout=self.timeout):
                self.successes.append(time.monotonic())
            else:
                self.failures += 1
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def succeeded_since(self, moment: float, count: int = 5) -> bool:
        """Whether at least ``count`` requests succeeded after ``moment``."""
        return sum(1 for t in self.successes if t > moment) >= count

    def gap(self, since: float) -> float:
        """The longest time without a successful request around ``since`` (the moment of the failure)."""
        times = [t for t in self.successes if t >= since - 2.0]
        before = [t for t in times if t <= since]
        start = before[-1] if before else since
        after = [t for t in times if t > start]
        if not after:
            return float("inf")
        gaps = [b - a for a, b in zip([start, *after], after, strict=False)]
        return max(gaps)


@contextlib.contextmanager
def running_pair(
    workdir: Path, fixtures: Path | None = None, timers: Timers = DEFAULT_TIMERS
) -> Iterator[Pair]:
    """A started pair (amp-a MASTER), destroyed afterwards."""
    pair = Pair(workdir, fixtures or default_fixtures(), timers)
    try:
        pair.create()
        pair.start()
        yield pair
    finally:
        pair.destroy()

"""Active-standby failover gap, and UDP through LVS beside UDP straight to a member (where IPVS exists).

``python -m bench failover [--rounds N] [--profiles default,fast,v3] [--kinds haproxy,...]``.
Needs root: two amphorae (real agents) share a VIP network in namespaces of their own
(``lab.vrrp``), configured only through the API with the controller's keepalived configs.
A client sends a request to the VIP every 20 ms on a new connection; the gap is the longest time
without a successful request around each failover. Each kind breaks the current MASTER, then repairs
it and waits until it is BACKUP again, so the roles alternate:

* ``haproxy``: the MASTER's haproxy is killed (its agent stopped first, so nothing restarts it) and
  its check fails; repaired by starting the agent again (it restarts haproxy).
* ``keepalived``: ``PUT /1.0/vrrp/stop`` on the MASTER; repaired with ``PUT /1.0/vrrp/start``.
* ``link``: the MASTER's eth1 goes down; repaired by setting it up.
* ``restart`` (no failover): the MASTER's haproxy is killed with its agent up; the agent's supervisor
  starts it again in place, faster than the check chain notices, so the VIP stays.

Timer profiles: ``default`` is the controller's (advert_int 1, check every 5 s, fall 2, rise 2);
``fast`` the fastest the controller's VRRPv2 config accepts (advert_int 1, check every 1 s, fall 1,
rise 1); ``v3`` the fastest keepalived accepts at all: VRRPv3 (no authentication) with advert_int
``--v3-advert`` (default 0.05 s; keepalived accepts down to 0.01) and the same 1 s check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common import Figure, loadavg, print_figures
from lab import namespaces
from lab.vrrp import FAST_TIMERS, Pair, Prober, Timers, default_fixtures, running_pair

TARGET_MEDIAN = 4.0  # seconds, with the controller's default timers
TARGET_LVS_SHARE = 0.8
_STATE = re.compile(rb"Entering (MASTER|BACKUP|FAULT) STATE")


def vrrp_state(pair: Pair, index: int) -> str | None:
    """The last VRRP state amphora ``index``'s keepalived logged."""
    log = pair.amphorae[index].base / "vrrp" / "octavia-keepalived.log"
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 65536))
            found = _STATE.findall(handle.read())
    except OSError:
        return None
    return found[-1].decode() if found else None


def break_and_repair(pair: Pair, kind: str, index: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """How to break amphora ``index`` one way, and how to repair it."""
    amp = pair.amphorae[index]
    if kind == "haproxy":

        def kill() -> None:
            amp.stop_agent()
            for pid in amp.haproxy_processes():
                os.kill(pid, signal.SIGKILL)

        return kill, amp.start_agent
    if kind == "keepalived":
        return lambda: pair.vrrp(index, "stop"), lambda: pair.vrrp(index, "start")
    if kind == "link":
        link = ("ip", "-n", amp.haproxy_ns, "link", "set", "eth1")
        return lambda: namespaces.sh(*link, "down"), lambda: namespaces.sh(*link, "up")
    raise ValueError(f"unknown failover kind {kind}")


def one_failover(pair: Pair, kind: str) -> float:
    """Break the MASTER one way, measure the gap, repair it and wait until it is BACKUP again."""
    master = pair.master()
    if master is None or vrrp_state(pair, 1 - master) != "BACKUP":
        raise RuntimeError(f"no clean MASTER/BACKUP pair before a {kind} failover")
    breaks, repair = break_and_repair(pair, kind, master)
    with Prober() as prober:
        if not namespaces.wait_until(lambda: prober.succeeded_since(time.monotonic() - 0.5), 10):
            raise RuntimeError("the VIP does not answer")
        broken = time.monotonic()
        breaks()
        if not namespaces.wait_until(lambda: pair.master() == 1 - master, 60, 0.05):
            raise RuntimeError(f"{kind}: the BACKUP never took the VIP")
        moved = time.monotonic()
        if not namespaces.wait_until(lambda: prober.succeeded_since(moved, 10), 30):
            raise RuntimeError(f"{kind}: no request succeeded after the failover")
    gap = prober.gap(broken)
    print(f"  {kind:10} gap {gap:5.2f} s (VIP moved after {moved - broken:.2f} s)", flush=True)
    repair()
    if not namespaces.wait_until(lambda: vrrp_state(pair, master) == "BACKUP", 60, 0.1):
        raise RuntimeError(f"{kind}: the repaired amphora did not become BACKUP")
    return gap


def restart_in_place(pair: Pair) -> float:
    """Kill the MASTER's haproxy with its agent up: the supervisor restarts it, the VIP should stay."""
    master = pair.master()
    if master is None:
        raise RuntimeError("no MASTER")
    amp = pair.amphorae[master]
    with Prober() as prober:
        if not namespaces.wait_until(lambda: prober.succeeded_since(time.monotonic() - 0.5), 10):
            raise RuntimeError("the VIP does not answer")
        broken = time.monotonic()
        for pid in amp.haproxy_processes():
            os.kill(pid, signal.SIGKILL)
        if not namespaces.wait_until(lambda: prober.succeeded_since(broken + 0.1, 10), 30):
            raise RuntimeError("restart: no request succeeded after the kill")
    gap = prober.gap(broken)
    where = "stayed" if pair.master() == master else "MOVED"
    print(f"  {'restart':10} gap {gap:5.2f} s (VIP {where})", flush=True)
    time.sleep(2.0)  # let the check chain see the restarted haproxy before the next round
    return gap


def failovers(pair: Pair, kind: str, rounds: int) -> list[float]:
    """Gaps of ``rounds`` failovers of one kind (roles alternate)."""
    if kind == "restart":
        return [restart_in_place(pair) for _ in range(rounds)]
    return [one_failover(pair, kind) for _ in range(rounds)]


def wait_backup(pair: Pair, index: int, timeout: float = 30.0) -> bool:
    """Wait until amphora ``index`` logged that it is BACKUP."""
    return namespaces.wait_until(lambda: vrrp_state(pair, index) == "BACKUP", timeout, 0.1)


def profile_timers(name: str, v3_advert: float) -> Timers:
    """The timers of a profile."""
    if name == "default":
        return Timers()
    if name == "fast":
        return FAST_TIMERS
    if name == "v3":
        return Timers(f"VRRPv3, advert_int {v3_advert:g} s", v3_advert, 1, 1, 1, vrrp_version=3)
    raise ValueError(f"unknown profile {name}")


def measure_failover(
    workdir: Path, profiles: list[str], kinds: list[str], rounds: int, v3: float
) -> list[Figure]:
    """The failover figures, profile by profile (a fresh pair each)."""
    figures = []
    for number, name in enumerate(profiles):
        timers = profile_timers(name, v3)
        print(f"\n{name}: {timers}", flush=True)
        with running_pair(workdir / f"p{number}", default_fixtures(), timers) as pair:
            if not wait_backup(pair, 1):
                raise RuntimeError("amp-b never became BACKUP")
            for kind in kinds:
                gaps = failovers(pair, kind, rounds)
                median = statistics.median(gaps)
                target = f"median <= {TARGET_MEDIAN:g} s" if name == "default" else "-"
                label = "haproxy killed, agent up (no failover)" if kind == "restart" else f"{kind} failover"
                figures.append(
                    Figure(
                        f"gap, {label}, {name} timers",
                        f"median {median:.2f} s, max {max(gaps):.2f} s ({len(gaps)} runs)",
                        target,
                        met=median <= TARGET_MEDIAN if name == "default" else None,
                    )
                )
    return figures


def udp_rate(address: str, port: int, seconds: float, senders: int = 4) -> float:
    """Request/reply datagrams per second to ``address:port`` from ``senders`` threads."""
    counts = [0] * senders
    deadline = time.monotonic() + seconds

    def send(slot: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            while time.monotonic() < deadline:
                sock.sendto(b"x" * 64, (address, port))
                try:
                    sock.recv(2048)
                    counts[slot] += 1
                except OSError:
                    pass

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 5)
    return sum(counts) / seconds


ECHO_MEMBER = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
LVS_LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"  # lvs/udp-listener.conf: 198.51.100.40:53
LVS_MEMBERS = ("203.0.113.61", "203.0.113.62")


@contextlib.contextmanager
def lvs_amphora(workdir: Path) -> Iterator[tuple[str, str]]:
    """An amphora running the controller's UDP listener; members in a namespace behind it.

    Yields (VIP, a member address); both are reachable from here (the member through the amphora's
    plain routing, the VIP through LVS).
    """
    amp = namespaces.Amphora(workdir / "lvs").create()
    member_ns = f"{amp.haproxy_ns}-m"
    members: list[subprocess.Popen[bytes]] = []
    try:
        amp.start_agent()
        amp.wire_tenant(vips=["198.51.100.40/24"], member_addresses=["198.51.100.1/24"])
        namespaces.sh("ip", "route", "add", "203.0.113.0/25", "via", "198.51.100.40")
        namespaces.sh("ip", "netns", "add", member_ns)
        namespaces.sh(
            *f"ip link add eth2 netns {amp.haproxy_ns} type veth peer name m0 netns {member_ns}".split()
        )
        namespaces.sh("ip", "-n", amp.haproxy_ns, "addr", "add", "203.0.113.1/25", "dev", "eth2")
        namespaces.sh("ip", "-n", amp.haproxy_ns, "link", "set", "eth2", "up")
        namespaces.sh(
            "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.vs.conntrack=1", netns=amp.haproxy_ns
        )
        for ip in LVS_MEMBERS:
            namespaces.sh("ip", "-n", member_ns, "addr", "add", f"{ip}/25", "dev", "m0")
        namespaces.sh("ip", "-n", member_ns, "link", "set", "m0", "up")
        namespaces.sh("ip", "-n", member_ns, "link", "set", "lo", "up")
        namespaces.sh("ip", "-n", member_ns, "route", "add", "default", "via", "203.0.113.1")
        for ip in LVS_MEMBERS:
            argv = ["nsenter", f"--net=/run/netns/{member_ns}", "--", sys.executable, "-c", ECHO_MEMBER, ip]
            members.append(subprocess.Popen(argv, start_new_session=True))
        text = (default_fixtures() / "lvs" / "udp-listener.conf").read_text()
        text = text.replace("/var/lib/octavia", str(amp.base))  # net_namespace as the controller sends it
        with amp.client() as api:
            url = f"/1.0/listeners/{amp.amphora_id}/{LVS_LISTENER}/udp_listener"
            api.put(url, content=text.encode()).raise_for_status()
            api.put(f"/1.0/loadbalancer/{LVS_LISTENER}/reload").raise_for_status()
        if not namespaces.wait_until(lambda: udp_rate("198.51.100.40", 53, 0.5, 1) > 0, 30):
            raise RuntimeError("LVS never forwarded")
        yield "198.51.100.40", LVS_MEMBERS[0]
    finally:
        for member in members:
            member.kill()
            member.wait(5)
        amp.destroy()
        namespaces.sh("ip", "netns", "del", member_ns, check=False)


def measure_lvs(workdir: Path) -> list[Figure]:
    """UDP through LVS vs. straight to the member: only where the kernel has IPVS."""
    if not Path("/proc/net/ip_vs").exists():
        reason = "skipped: no IPVS in this kernel (/proc/net/ip_vs is absent)"
        return [Figure("UDP through LVS / direct", reason, f">= {TARGET_LVS_SHARE:.0%}")]

    with lvs_amphora(workdir) as (vip, member):
        direct = udp_rate(member, 53, 3.0)
        through = udp_rate(vip, 53, 3.0)
    share = through / direct if direct else 0.0
    return [
        Figure("UDP datagrams/s direct to a member", f"{direct:.0f}/s"),
        Figure(
            "UDP datagrams/s through LVS",
            f"{through:.0f}/s ({share:.0%} of direct)",
            f">= {TARGET_LVS_SHARE:.0%} of direct",
            met=share >= TARGET_LVS_SHARE,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the failover (and, with IPVS, the LVS) benchmark in a private namespace."""
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="failovers per kind and profile (default 5)")
    parser.add_argument("--profiles", default="default,fast,v3", help="timer profiles (default, fast, v3)")
    parser.add_argument("--kinds", default="haproxy,keepalived,link,restart", help="failover kinds")
    parser.add_argument("--v3-advert", type=float, default=0.05, help="VRRPv3 advert_int in seconds")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("failover bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    namespaces.isolate()
    print(f"failover bench ({loadavg()} at start)", flush=True)
    with tempfile.TemporaryDirectory(prefix="ampfo") as tmp:
        figures = measure_failover(
            Path(tmp), args.profiles.split(","), args.kinds.split(","), args.rounds, args.v3_advert
        )
        figures += measure_lvs(Path(tmp))
    print_figures("failover: longest time without a successful request", figures, f"{loadavg()} at the end")
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

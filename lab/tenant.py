"""The tenant side of a VM amphora: its VIP and member networks, with clients and members on them.

Two bridges in the VM lab's namespace play the Neutron networks of the controller fixtures: VIP
network B (198.51.100.128/25, the multi-listener load balancer's VIP 198.51.100.140) and the member
network (203.0.113.0/25). Each has a veth into a namespace of the caller, ``client`` and
``member``; the NICs hot-plugged into the VM (``Vm.hotplug``) land on the same bridges, so traffic
goes client -> VIP NIC -> amphora -> member NIC -> member as between real hosts.

SCTP peers cannot run on this side (the host kernel has no SCTP): ``GuestPeers`` runs them in
namespaces inside the guest, each behind a NIC of its own hot-plugged onto the same bridges, so
their traffic takes the same path through the VIP NIC as a client on another host. The guest
agent only sets those peers up and runs them; the amphora itself is driven through its API.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from lab import namespaces, vm

VIP_BRIDGE = "brvip"
MEMBER_BRIDGE = "brmem"
VIP = "198.51.100.140"  # the multi-listener load balancer's VIP (VIP network B)
VIP6 = "2001:db8:100::140"
CLIENT_ADDRESSES = ("198.51.100.200/25", "2001:db8:100::200/64")
MEMBER_PREFIX = 25  # the member network 203.0.113.0/25
GUEST_CLIENT = "198.51.100.201/25"
GUEST_CLIENT_MAC = "fa:16:3e:99:00:01"
GUEST_MEMBER_MAC = "fa:16:3e:99:00:02"
IP_UDP_HEADERS = 28  # what IPVS counts besides the payload of an IPv4 UDP datagram
# client ports of the UDP pairs, below the ephemeral range and never reused within a run: each pair
# is a new IPVS connection (a random ephemeral port may repeat one still in IPVS's table for 5 min)
_client_ports = itertools.cycle(range(10_000, 30_000))


@dataclass
class TenantNetworks:
    """The VIP and member bridges in the lab, a client namespace and a member namespace."""

    lab: vm.VmLab
    member_addresses: tuple[str, ...]
    client: namespaces.Peer = field(default_factory=lambda: namespaces.Peer("client"))
    member: namespaces.Peer = field(default_factory=lambda: namespaces.Peer("member"))

    def create(self) -> TenantNetworks:
        """Bridges, namespaces and addresses; undone by ``destroy`` (also after a partial create)."""
        for bridge, peer in ((VIP_BRIDGE, self.client), (MEMBER_BRIDGE, self.member)):
            self.lab.bridge(bridge)
            peer.create()
            self.lab.connect(bridge, peer.name)
        for address in CLIENT_ADDRESSES:
            self.client.sh("ip", "address", "add", address, "dev", "eth0", "nodad")
        for address in self.member_addresses:
            self.member.sh("ip", "address", "add", f"{address}/{MEMBER_PREFIX}", "dev", "eth0")
        # a stopped UDP member answers every health-check probe with port unreachable
        self.member.sh("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        for peer in (self.client, self.member):
            peer.sh("ip", "link", "set", "eth0", "up")
        return self

    def destroy(self) -> None:
        """Delete both namespaces (their veth ends go with them) and the bridges (the lab may
        create them again)."""
        for peer in (self.client, self.member):
            peer.destroy()
        for bridge in (VIP_BRIDGE, MEMBER_BRIDGE):
            self.lab.delete_link(bridge)


class UdpMember:
    """A UDP member in a namespace answering ``<its address> <request>``, served by a thread here."""

    def __init__(self, peer: namespaces.Peer, address: str, port: int) -> None:
        self.address = address
        self.sock = peer.call(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"udp-member-{address}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
                self.sock.sendto(self.address.encode() + b" " + data, peer)
            except OSError:
                continue

    def close(self) -> None:
        """Stop answering and free the port (the member's host then answers port unreachable)."""
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class UdpRun:
    """Request/response pairs sent to a UDP VIP: who answered, what was lost, the bytes IPVS sees."""

    answers: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    request_bytes: int = 0  # IP length of every request sent
    reply_bytes: int = 0  # IP length of every reply received
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        """Requests sent."""
        return sum(self.answers.values()) + self.lost

    def share(self, address: str) -> float:
        """The fraction of the answered requests ``address`` answered."""
        answered = sum(self.answers.values())
        return self.answers[address] / answered if answered else 0.0


def udp_pairs(vip: str, port: int, count: int, timeout: float = 1.0, max_seconds: float = 120.0) -> UdpRun:
    """``count`` request/response pairs, each from a port of its own (a new IPVS connection); bounded in time.

    Runs in the caller's namespace (``Peer.call`` it in the client's).
    """
    run = UdpRun()
    started = time.monotonic()
    for n in range(count):
        if time.monotonic() - started > max_seconds:
            break
        request = f"pair-{n:06d}".encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", next(_client_ports)))
            sock.settimeout(timeout)
            sock.sendto(request, (vip, port))
            run.request_bytes += len(request) + IP_UDP_HEADERS
            try:
                reply = sock.recv(2048)
            except OSError:  # timeout, or port unreachable relayed by IPVS
                run.lost += 1
                continue
        member, _, echoed = reply.partition(b" ")
        if echoed != request:
            run.lost += 1
            continue
        run.answers[member.decode()] += 1
        run.reply_bytes += len(reply) + IP_UDP_HEADERS
    run.seconds = time.monotonic() - started
    return run


SCTP_MEMBER = """import socket, sys, threading
def serve(address, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        try:
            conn.recv(100)
            conn.sendall(address.encode())
        except OSError:
            pass
        conn.close()
threads = [threading.Thread(target=serve, args=(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])))
           for a in sys.argv[1:]]
for t in threads:
    t.start()
"""  # an SCTP member answering its address: python3 -c SCTP_MEMBER ADDRESS:PORT ...

SCTP_CLIENT = """import json, socket, sys
vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers, failed = {}, 0
for _ in range(count):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP) as s:
            s.settimeout(3)
            s.connect((vip, port))
            s.sendall(b"hello")
            who = s.recv(100).decode()
            answers[who] = answers.get(who, 0) + 1
    except OSError:
        failed += 1
print(json.dumps({"answers": answers, "failed": failed}))
"""  # SCTP associations to a VIP: python3 -c SCTP_CLIENT VIP PORT COUNT


@dataclass
class GuestPeers:
    """SCTP client and members in namespaces inside the guest, each behind a NIC of its own."""

    machine: vm.Vm
    member_addresses: tuple[str, ...]
    client_ns: str = "sctp-client"
    member_ns: str = "sctp-member"

    def _sh(self, script: str, timeout: float = 60.0) -> str:
        code, out = self.machine.guest().run(["/bin/sh", "-c", script], timeout=timeout)
        if code != 0:
            raise RuntimeError(f"guest: {script!r} exited {code}: {out}")
        return out

    def nic_names(self) -> dict[str, str]:
        """The guest's NICs in its own namespace by MAC."""
        names = {}
        for line in self._sh("ip -br link").splitlines():
            fields = line.split()
            if len(fields) >= 3:
                names[fields[2]] = fields[0]
        return names

    def attach(self, timeout: float = 60.0) -> None:
        """Hot-plug a NIC on each tenant bridge and make the two peer namespaces behind them."""
        self.machine.hotplug(GUEST_CLIENT_MAC, VIP_BRIDGE, "peer-client")
        self.machine.hotplug(GUEST_MEMBER_MAC, MEMBER_BRIDGE, "peer-member")
        wanted = {GUEST_CLIENT_MAC, GUEST_MEMBER_MAC}
        names = vm.wait_for(
            "the peers' NICs in the guest",
            lambda: (lambda found: found if wanted <= found.keys() else None)(self.nic_names()),
            timeout,
            interval=0.5,
        )
        member_addresses = "\n".join(
            f"ip -n {self.member_ns} address add {a}/{MEMBER_PREFIX} dev eth0" for a in self.member_addresses
        )
        self._sh(
            f"""set -e
modprobe sctp
for ns in {self.client_ns} {self.member_ns}; do ip netns add $ns; ip -n $ns link set lo up; done
ip link set {names[GUEST_CLIENT_MAC]} netns {self.client_ns} name eth0
ip link set {names[GUEST_MEMBER_MAC]} netns {self.member_ns} name eth0
ip -n {self.client_ns} address add {GUEST_CLIENT} dev eth0
{member_addresses}
ip -n {self.client_ns} link set eth0 up
ip -n {self.member_ns} link set eth0 up
"""
        )

    def start_member(self, *endpoints: str) -> int:
        """An SCTP member answering its address on each ``ADDRESS:PORT``; its pid in the guest."""
        argv = ["/usr/sbin/ip", "netns", "exec", self.member_ns, "python3", "-c", SCTP_MEMBER, *endpoints]
        pid = self.machine.guest().spawn(argv)

        def listening() -> bool:
            out = self._sh(f"ip netns exec {self.member_ns} ss -Hln --sctp")
            return all(endpoint in out for endpoint in endpoints)

        vm.wait_for(f"SCTP member {endpoints}", listening, 30, interval=0.3)
        return pid

    def stop(self, pid: int) -> None:
        """Stop a peer by its pid in the guest."""
        with contextlib.suppress(RuntimeError):
            self._sh(f"kill {pid}")

    def associations(self, vip: str, port: int, count: int) -> tuple[Counter[str], int]:
        """``count`` SCTP associations from the client namespace: who answered, how many failed."""
        argv = ["/usr/sbin/ip", "netns", "exec", self.client_ns, "python3", "-c", SCTP_CLIENT]
        code, out = self.machine.guest().run([*argv, vip, str(port), str(count)], timeout=30 + 4 * count)
        if code != 0:
            raise RuntimeError(f"SCTP client exited {code}: {out}")
        result = json.loads(out.strip().splitlines()[-1])
        return Counter(result["answers"]), int(result["failed"])

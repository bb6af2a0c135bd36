"""Networking: plug VIP and plug network latency, and reboot recovery with 10 load balancers.

``python -m bench network``. Needs root: it moves itself into a private network namespace; the
amphora, its hot-plugged ports (veth pairs created down with the controller's MACs), the clients
and the members all live in namespaces it creates and deletes.

* plug VIP / plug network: the controller's bodies (``plug-vip-single-ipv4.json``,
  ``plug-network.json`` without its IPv6 fixed IP), each sample on a freshly hot-plugged NIC that is
  deleted afterwards, over one kept-alive mTLS connection. The dual-stack member body is measured
  too: it waits out IPv6 duplicate address detection (about 1-2 s, the kernel's timers).
* reboot: 10 load balancers (one listener each on the VIP), then agent and haproxy killed, the
  haproxy namespace deleted and its NICs back under new names; the time from starting the agent
  until every load balancer answers a client again.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import AgentClient, Figure, loadavg, ms, print_figures
from lab import namespaces
from lab.configs import CONTROLLER_FIXTURES, Listener, Member, fixed_id, render_config, rss_mib
from lab.namespaces import preflight

REQUESTS = CONTROLLER_FIXTURES / "requests"
VIP, VIP_MAC, MEMBER_MAC = "198.51.100.10", "fa:16:3e:5a:00:01", "fa:16:3e:a0:00:02"
CLIENT_SIDE = ("198.51.100.1/26",)
MEMBERS = (Member("member-1", "203.0.113.11", 80), Member("member-2", "203.0.113.12", 80))
MEMBER_SIDE = ("203.0.113.1/25", "203.0.113.11/25", "203.0.113.12/25")
SAMPLES, DUAL_STACK_SAMPLES, REBOOTS, LBS = 20, 3, 5, 10
FIRST_PORT = 8001
TARGET_VIP, TARGET_NETWORK, TARGET_REBOOT = 0.200, 0.150, 2.0


def request_body(name: str, ipv4_only: bool = False) -> bytes:
    """A controller body; ``ipv4_only`` drops IPv6 fixed IPs."""
    raw = (REQUESTS / name).read_bytes()
    if not ipv4_only:
        return raw
    data = json.loads(raw)
    data["fixed_ips"] = [f for f in data["fixed_ips"] if ":" not in f["ip_address"]]
    return json.dumps(data).encode()


def answers(client: namespaces.Peer, port: int) -> bool:
    """Whether the VIP answers a GET on ``port`` from the client namespace (HTTP 200)."""

    def get() -> bool:
        with socket.create_connection((VIP, port), timeout=0.5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
            return b" 200 " in sock.recv(64).split(b"\r\n", 1)[0]

    try:
        return client.call(get)
    except OSError:
        return False


def sample_plugs(
    amp: namespaces.Amphora, api: AgentClient, client: namespaces.Peer, member: namespaces.Peer
) -> dict[str, list[float]]:
    """Timed plugs, each on a NIC hot-plugged just before and deleted just after."""
    found: dict[str, list[float]] = {"vip": [], "network": [], "dual": []}
    cases = [
        (
            "vip",
            VIP_MAC,
            client,
            CLIENT_SIDE,
            f"/1.0/plug/vip/{VIP}",
            request_body("plug-vip-single-ipv4.json"),
        ),
        ("network", MEMBER_MAC, member, (), "/1.0/plug/network", request_body("plug-network.json", True)),
        ("dual", MEMBER_MAC, member, (), "/1.0/plug/network", request_body("plug-network.json")),
    ]
    for key, mac, peer, far, path, body in cases:
        for _ in range(DUAL_STACK_SAMPLES if key == "dual" else SAMPLES):
            amp.hotplug(mac, peer.name, far)
            found[key].append(api.timed("POST", path, 202, body))
            namespaces.sh("ip", "-n", amp.haproxy_ns, "link", "del", "eth1" if key == "vip" else "eth2")
    return found


def first_plug(tmp: Path, client: namespaces.Peer) -> float:
    """Plug VIP on an agent started a moment ago (the library still loading in the background)."""
    amp = namespaces.Amphora(tmp / "first").create()
    try:
        amp.start_agent()
        amp.hotplug(VIP_MAC, client.name)
        api = AgentClient(amp)
        took = api.timed("POST", f"/1.0/plug/vip/{VIP}", 202, request_body("plug-vip-single-ipv4.json"))
        api.close()
        return took
    finally:
        amp.destroy()


def load_balancers(amp: namespaces.Amphora, api: AgentClient) -> list[int]:
    """10 load balancers, one HTTP listener each on the VIP, started; their ports."""
    ports = []
    for index in range(LBS):
        lb_id, port = fixed_id(f"bench/network/lb-{index}"), FIRST_PORT + index
        listener = Listener(f"net-{index}", "HTTP", port, MEMBERS)
        cfg = render_config(lb_id, VIP, (listener,), amp.base, maxconn=500)
        api.expect("PUT", f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy", 202, cfg)
        api.expect("PUT", f"/1.0/loadbalancer/{lb_id}/reload", 202)
        ports.append(port)
    return ports


def reboot_once(amp: namespaces.Amphora, client: namespaces.Peer, ports: list[int]) -> tuple[float, float]:
    """Simulated reboot; (seconds until the API answers, seconds until every load balancer answers)."""
    amp.simulate_reboot()
    started = time.monotonic()
    amp.start_agent()
    api_up = time.monotonic() - started
    waiting = set(ports)
    deadline = started + 30
    while waiting and time.monotonic() < deadline:
        waiting = {port for port in waiting if not answers(client, port)}
        if waiting:
            time.sleep(0.01)
    if waiting:
        raise RuntimeError(f"load balancers on ports {sorted(waiting)} did not answer within 30 s")
    return api_up, time.monotonic() - started


def measure(tmp: Path) -> list[Figure]:
    """Every figure of this benchmark."""
    amp = namespaces.Amphora(tmp / "amp").create()
    client, member = namespaces.Peer("client").create(), namespaces.Peer("member").create()
    members = namespaces.Backends()
    try:
        amp.start_agent()
        api = AgentClient(amp)
        samples = sample_plugs(amp, api, client, member)
        amp.hotplug(VIP_MAC, client.name, CLIENT_SIDE)
        amp.hotplug(MEMBER_MAC, member.name, MEMBER_SIDE)
        api.expect("POST", f"/1.0/plug/vip/{VIP}", 202, request_body("plug-vip-single-ipv4.json"))
        api.expect("POST", "/1.0/plug/network", 202, request_body("plug-network.json", True))
        for m in MEMBERS:
            members.start(m.address, m.port, m.name, netns=member.name)
        ports = load_balancers(amp, api)
        api.close()
        if not namespaces.wait_until(lambda: all(answers(client, p) for p in ports), 15, 0.05):
            raise RuntimeError("the load balancers do not answer before the reboot")
        reboots = [reboot_once(amp, client, ports) for _ in range(REBOOTS)]
        rss = rss_mib(amp.process.pid) if amp.process else 0.0
        first = first_plug(tmp, client)
    finally:
        members.stop()
        amp.destroy()
        client.destroy()
        member.destroy()
    vip, net, dual = (statistics.median(samples[k]) for k in ("vip", "network", "dual"))
    all_up = [r[1] for r in reboots]
    return [
        Figure(
            f"plug VIP, IPv4 (median of {SAMPLES})", ms(vip), f"<= {ms(TARGET_VIP)}", met=vip <= TARGET_VIP
        ),
        Figure(f"plug VIP, IPv4, max of {SAMPLES}", ms(max(samples["vip"]))),
        Figure("plug VIP, first on a fresh agent", ms(first)),
        Figure(
            f"plug network, IPv4 (median of {SAMPLES})",
            ms(net),
            f"<= {ms(TARGET_NETWORK)}",
            met=net <= TARGET_NETWORK,
        ),
        Figure(f"plug network, IPv4 + IPv6 (median of {DUAL_STACK_SAMPLES}, waits DAD)", ms(dual)),
        Figure(
            f"reboot, {LBS} LBs: agent start -> all answering (median of {REBOOTS})",
            ms(statistics.median(all_up)),
            f"<= {TARGET_REBOOT:g} s",
            met=statistics.median(all_up) <= TARGET_REBOOT,
        ),
        Figure(f"reboot, {LBS} LBs: worst of {REBOOTS}", ms(max(all_up))),
        Figure("reboot: agent start -> API answering (median)", ms(statistics.median(r[0] for r in reboots))),
        Figure("agent RSS after recovery", f"{rss:.1f} MiB", "< 50 MiB", met=0 < rss < 50),
    ]


def main() -> int:
    """Run the network benchmark in a private namespace and print the figures beside their targets."""
    problem = preflight()
    if problem:
        print(f"network bench: {problem}", file=sys.stderr)
        return 2
    namespaces.isolate()
    print(f"network bench: plug VIP / network, reboot recovery ({loadavg()} at start)", flush=True)
    with tempfile.TemporaryDirectory(prefix="ampnet") as tmp:
        figures = measure(Path(tmp))
    print_figures("network: plugs and reboot recovery", figures, f"{loadavg()} at the end")
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{len(missed)} target(s) missed" + (f": {'; '.join(missed)}" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

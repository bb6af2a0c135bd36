"""Active-standby across two amphora VMs, for ``python -m bench vm``: the failover gap when the MASTER
VM is paused (QMP ``stop``, as a hung hypervisor), and when it comes back (``cont``).

amp-a and amp-b of the controller fixtures boot with their own agent configs (their ids, topology
ACTIVE_STANDBY, as the controller renders them), get their VIP ports hot-plugged onto one VIP
network and plugged with their own plug-VIP bodies, then the multi-listener active-standby config
(its peers section names both), the certificates and the VRRP configs (MASTER priority 100, BACKUP
90, the controller's default timers) go through their APIs. A router namespace on the VIP network
(198.51.100.129, the subnet's gateway) forwards to the members and sends one request every 20 ms
on a new connection; the gap is the longest time without an answered request.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Figure
from lab import namespaces, tenant, vm
from lab.amphora_vm import Amphora, Controller, config_drive, ready
from lab.configs import CONTROLLER_FIXTURES, http_get

LB = "1255f924-18da-44a0-aad7-23512f2c0594"
AMPHORAE = (  # name, amphora id, management MAC, plug-VIP body, VRRP config
    ("amp-a", "cad520e3-2e33-4593-892d-18fd042fdd61", "fa:16:3e:00:00:0a", "amp-a", "vrrp-master.conf"),
    ("amp-b", "06e381ee-2adc-4e44-8253-e6a5c4301a38", "fa:16:3e:00:00:0b", "amp-b", "vrrp-backup.conf"),
)
MEMBERS = (("203.0.113.21", 8080), ("203.0.113.22", 8080))
GATEWAY = "198.51.100.129/25"  # the VIP subnet's gateway in the plug bodies: the router namespace
MEMBER_GATEWAY = "203.0.113.1/25"
TARGET_GAP = 4.0


@dataclass
class Probe:
    """One GET to the VIP every ``every`` seconds on a new connection, in the router namespace."""

    router: namespaces.Peer
    every: float = 0.02
    answered: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                if http_get(tenant.VIP, 80, timeout=0.5)[0] == 200:
                    self.answered.append(time.monotonic())
            self._stop.wait(self.every)

    @contextlib.contextmanager
    def running(self) -> Iterator[Probe]:
        """Probe while the block runs (the thread is started inside the router's namespace)."""
        thread = self.router.call(lambda: _started(threading.Thread(target=self._run, daemon=True)))
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)

    def gap(self, since: float) -> float:
        """The longest time without an answer from the last one before ``since`` to the last one."""
        answered = list(self.answered)
        before = max((t for t in answered if t <= since), default=since)
        times = [before, *(t for t in answered if t > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def wait_answered(self, since: float, steady: float, timeout: float) -> bool:
        """Until answers came back after ``since`` and kept coming for ``steady`` seconds."""

        def done() -> bool:
            later = [t for t in self.answered if t > since]
            return bool(later) and time.monotonic() - later[0] >= steady and self.gap(later[0]) < 1.0

        return namespaces.wait_until(done, timeout, interval=0.2)


def _started(thread: threading.Thread) -> threading.Thread:
    thread.start()
    return thread


def router(networks: tenant.TenantNetworks, net: vm.VmLab) -> None:
    """The client namespace becomes the VIP subnet's gateway and routes to the member namespace."""
    client, member = networks.client, networks.member
    client.sh("ip", "address", "add", GATEWAY, "dev", "eth0")
    net.connect(tenant.MEMBER_BRIDGE, client.name, ifname="eth1")
    client.sh("ip", "address", "add", MEMBER_GATEWAY, "dev", "eth1")
    client.sh("ip", "link", "set", "eth1", "up")
    client.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    member.sh("ip", "route", "add", "default", "via", MEMBER_GATEWAY.split("/")[0])


def configure(amp: Amphora, vip_body: bytes, vrrp: bytes) -> None:
    """Plug the VIP, then certificates, the active-standby config, VRRP: as the controller's flows do."""
    mac = json.loads(vip_body)["mac_address"]
    amp.vm.hotplug(mac, tenant.VIP_BRIDGE, "port-vip")
    vm.wait_for("the VIP port in the guest", lambda: mac in amp.guest("ip", "-br", "link"), 60, interval=0.5)
    config = (CONTROLLER_FIXTURES / "haproxy" / "multi-listener-active-standby.cfg").read_bytes()
    with amp.client() as api:
        api.checked("POST", f"/1.0/plug/vip/{tenant.VIP}", content=vip_body)
        for pem in sorted((CONTROLLER_FIXTURES / "certs" / LB).iterdir()):
            api.put_certificate(LB, pem.name, pem.read_bytes())
        api.put_haproxy_config(LB, config, amphora_id=amp.amphora_id)
        api.reload(LB)
        api.put_vrrp_config(vrrp)
        api.vrrp_action("start")


def diagnosis(amp: Amphora) -> str:
    """What the BACKUP shows when it does not take over: VRRP's log, addresses, listening sockets."""
    commands = (
        "tail -25 /var/lib/octavia/vrrp/octavia-keepalived.log",
        "ip -n amphora-haproxy -br address; ip -n amphora-haproxy neigh",
        "ip netns exec amphora-haproxy ss -ltnp | head -20",
        "journalctl -b -u amphora-agent --no-pager | tail -15",
    )
    out = [f"== {amp.vm.name} =="]
    for command in commands:
        out += [f"$ {command}", amp.guest("sh", "-c", command + " 2>&1", check=False)]
    return "\n".join(out)


def holds_vip(amp: Amphora) -> bool:
    """Whether the VIP is on this amphora's eth1 (it is the MASTER)."""
    return f"{tenant.VIP}/32" in amp.guest("ip", "-n", "amphora-haproxy", "-br", "address", check=False)


def failover(net: vm.VmLab, controller: Controller, image: Path, rounds: int) -> list[Figure]:
    """Boot both, configure, then pause and resume the MASTER ``rounds`` times; the gaps."""
    networks = tenant.TenantNetworks(net, tuple(address for address, _ in MEMBERS))
    members = namespaces.Backends()
    with contextlib.ExitStack() as stack:
        stack.callback(networks.destroy)
        stack.callback(members.stop)
        networks.create()
        router(networks, net)
        for n, (address, port) in enumerate(MEMBERS):
            members.start(address, port, f"web-{n + 1}", netns=networks.member.name)
        started = []
        for name, amphora_id, mac, _, _ in AMPHORAE:  # both boot at once (a minute or two under TCG)
            iso, files = config_drive(
                net, controller, CONTROLLER_FIXTURES, name, amphora_id, "ACTIVE_STANDBY"
            )
            machine = vm.Vm(net, image, iso, mac=mac, name=name)
            stack.callback(machine.stop)
            started.append((machine.start(), files, amphora_id))
        amps = [ready(machine, controller, files, amphora_id) for machine, files, amphora_id in started]
        for amp, (_, _, _, body, vrrp) in zip(amps, AMPHORAE, strict=True):
            vip_body = (
                CONTROLLER_FIXTURES / "requests" / f"plug-vip-active-standby-{body}.json"
            ).read_bytes()
            configure(amp, vip_body, (CONTROLLER_FIXTURES / "keepalived" / vrrp).read_bytes())
        client = networks.client
        ok = namespaces.wait_until(lambda: client.call(lambda: http_get(tenant.VIP, 80))[0] == 200, 120, 0.5)
        if not ok or not vm.wait_for("amp-a MASTER", lambda: holds_vip(amps[0]), 60, interval=1):
            raise RuntimeError("the pair never served through the VIP from amp-a")
        away, back, paused_names = [], [], []
        with Probe(client).running() as probe:
            for _ in range(rounds):
                time.sleep(5)
                master = next(amp for amp in amps if holds_vip(amp))
                paused_names.append(master.vm.name)
                paused = time.monotonic()
                master.vm.qmp.execute("stop")
                if not probe.wait_answered(paused, 3.0, 60):
                    for amp in amps:
                        if amp is not master:
                            print(diagnosis(amp), flush=True)
                    raise RuntimeError("the BACKUP never answered")
                away.append(probe.gap(paused))
                resumed = time.monotonic()
                master.vm.qmp.execute("cont")
                time.sleep(15)  # a resumed amp-a preempts again (priority 100); ARP caches follow its GARP
                back.append(probe.gap(resumed))
        holder = next((amp.vm.name for amp in amps if holds_vip(amp)), "none")
    worst = max(away)
    return [
        Figure(
            f"MASTER VM paused (QMP stop): gap, {rounds} failovers",
            " / ".join(f"{g:.2f} s" for g in away),
            f"<= {TARGET_GAP:.0f} s",
            met=worst <= TARGET_GAP,
        ),
        Figure(
            "MASTER VM resumed (QMP cont): gap while it takes the VIP back",
            " / ".join(f"{g:.2f} s" for g in back),
        ),
        Figure("the VM paused in each round", " / ".join(paused_names)),
        Figure("the VIP's holder at the end", holder),
    ]

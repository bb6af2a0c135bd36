"""``python -m bench vm``: the amphora VM's memory under the controller's big load balancers, and
active-standby across two VMs (``bench/vm_pair.py``).

Memory: the test build boots in a 1 GiB VM; its ports are hot-plugged and plugged as in the VM
tests, then one load balancer of 10 and of 100 listeners in the controller's config shape
(``lab.controller_lb``: HTTP, TCP and TERMINATED_HTTPS in turn) is uploaded and started, its
``tune.ssl.cachesize`` computed from what ``GET /1.0/details`` reports, as the controller does. Two
limit shapes: the fixtures' connection limits (2,000 per HTTP or TLS listener, 1,000 per TCP one),
and none set (50,000 each, global ``maxconn`` capped at 1,000,000). ``MemAvailable`` and the RSS
of the agent and haproxy are read in the guest (qemu-guest-agent) idle, with each load balancer,
during and after 100 updates (``PUT .../haproxy`` + reload) under HTTP traffic. Everything runs in
a private network namespace and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Figure, loadavg, print_figures
from lab import controller_lb, namespaces, tenant, vm
from lab.amphora_vm import AMPHORA_ID, Amphora, Controller, boot_amphora
from lab.configs import CONTROLLER_FIXTURES, Load, fixed_id, http_get

REPO = Path(__file__).resolve().parents[1]
LB_ID = fixed_id("vm-bench/lb")
MEMBERS = (("203.0.113.21", 8080), ("203.0.113.22", 8080))
FIXTURE_LIMITS = {"HTTP": 2000, "TCP": 1000, "TERMINATED_HTTPS": 2000}
CERT = "43283cf1db2d85bdd8deb823fdad81bcfb28cc30.pem"  # www.example.com, as the controller uploads it
FIXTURE_LB = "1255f924-18da-44a0-aad7-23512f2c0594"
MIB = 1024


def test_image() -> Path:
    """The test build (built when it is not current), as the VM tests boot it."""
    done = subprocess.run(
        [str(REPO / "image" / "build.sh"), "--test", "--print-path"],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return Path(done.stdout.split()[-1])


def meminfo(amp: Amphora) -> dict[str, float]:
    """/proc/meminfo of the guest in MiB."""
    text = amp.guest("cat", "/proc/meminfo")
    return {m[1]: int(m[2]) / MIB for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}


def rss(amp: Amphora, program: str) -> list[float]:
    """RSS (MiB) of every process named ``program`` in the guest."""
    out = amp.guest("ps", "-o", "rss=", "-C", program, check=False)
    return [int(kib) / MIB for kib in out.split()]


@dataclass
class Sampler:
    """MemAvailable and haproxy's total RSS in the guest, read every ``every`` seconds in a thread."""

    amp: Amphora
    every: float = 1.0
    available: list[float] = field(default_factory=list)
    haproxy: list[float] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    shmem: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                info = meminfo(self.amp)
                procs = rss(self.amp, "haproxy")
            except (OSError, RuntimeError, TimeoutError, ValueError):
                continue
            self.available.append(info["MemAvailable"])
            self.shmem.append(info["Shmem"])
            self.haproxy.append(sum(procs))
            self.processes.append(len(procs))

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        """Sample while the block runs."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30)


def upload_certificates(amp: Amphora, shaped: list[controller_lb.ShapedListener]) -> None:
    """The listener certificate and one crt-list per TLS listener, as the controller uploads them."""
    pem = (CONTROLLER_FIXTURES / "certs" / FIXTURE_LB / CERT).read_bytes()
    with amp.client() as api:
        api.put_certificate(LB_ID, CERT, pem)
        for listener in shaped:
            if listener.protocol == "TERMINATED_HTTPS":
                api.put_certificate(LB_ID, f"{listener.id}.pem", controller_lb.crt_list(LB_ID, CERT))


@dataclass
class Update:
    """One controller update: the config sent, the memory figures it was sized from, the reload's answer."""

    config: bytes
    memory: dict[str, int]
    status: int
    reason: str
    seconds: float


def apply(amp: Amphora, shaped: list[controller_lb.ShapedListener]) -> Update:
    """Render from the amphora's ``/1.0/details`` as the controller does, then PUT and reload."""
    started = time.monotonic()
    with amp.client() as api:
        memory = api.details()["memory"]
        config = controller_lb.render(LB_ID, tenant.VIP, shaped, MEMBERS, memory)
        api.put_haproxy_config(LB_ID, config, amphora_id=AMPHORA_ID)
        reply = api.request("PUT", f"/1.0/loadbalancer/{LB_ID}/reload")
    reason = "" if reply.status_code == 202 else reply.text[:300]
    return Update(config, memory, reply.status_code, reason, time.monotonic() - started)


def serving(client: namespaces.Peer, timeout: float = 120.0) -> None:
    """Until the first HTTP listener answers through the VIP."""
    ok = namespaces.wait_until(lambda: client.call(lambda: http_get(tenant.VIP, 80))[0] == 200, timeout, 0.5)
    if not ok:
        raise TimeoutError("the load balancer does not answer through the VIP")


def cachesize(config: bytes) -> str:
    """The rendered ``tune.ssl.cachesize`` (or haproxy's default)."""
    found = re.search(rb"tune\.ssl\.cachesize (\d+)", config)
    return f"{int(found[1]):,}" if found else "unset (20,000)"


def shape_figures(
    amp: Amphora, client: namespaces.Peer, name: str, count: int, limits: dict[str, int] | None
) -> list[Figure]:
    """One load balancer of ``count`` listeners running: memory figures (10 listeners: >= 700 MiB)."""
    shaped = controller_lb.listeners(count, limits)
    upload_certificates(amp, shaped)
    update = apply(amp, shaped)
    label = f"{count} listeners, {name}: maxconn {controller_lb.global_maxconn(shaped):,}"
    print(f"{label}: update {update.status} in {update.seconds:.1f} s", flush=True)
    if update.status != 202:
        return [
            Figure(f"{label}: update (PUT + reload)", f"{update.status} {update.reason}", "202", met=False)
        ]
    serving(client)
    time.sleep(10)  # health checks of every member have run, the old worker is gone
    info = meminfo(amp)
    available = info["MemAvailable"]
    detail = (
        f"free+buffers+cached {sum(update.memory[k] for k in ('free', 'buffers', 'cached')) / MIB:.0f} MiB"
    )
    return [
        Figure(
            f"{label}, tune.ssl.cachesize", cachesize(update.config), baseline=f"from /1.0/details: {detail}"
        ),
        Figure(f"{label}, update (PUT + reload)", f"{update.seconds:.1f} s"),
        Figure(
            f"{label}, MemAvailable",
            f"{available:.0f} MiB",
            ">= 700 MiB" if count == 10 else "-",
            met=available >= 700 if count == 10 else None,
        ),
        Figure(f"{label}, Shmem (the SSL session cache lives there)", f"{info['Shmem']:.0f} MiB"),
        Figure(
            f"{label}, haproxy RSS (master + worker)",
            " + ".join(f"{r:.1f}" for r in rss(amp, "haproxy")) + " MiB",
        ),
        Figure(f"{label}, agent RSS", f"{sum(rss(amp, 'amphora-agent')):.1f} MiB"),
    ]


def reload_figures(amp: Amphora, client: namespaces.Peer, reloads: int) -> list[Figure]:
    """``reloads`` controller updates (PUT + reload) of the 10-listener LB under HTTP traffic."""
    shaped = controller_lb.listeners(10, FIXTURE_LIMITS)
    upload_certificates(amp, shaped)
    apply(amp, shaped)
    serving(client)
    time.sleep(5)
    load = client.call(lambda: Load(tenant.VIP, 80, threads=2, max_seconds=1800).__enter__())
    sampler = Sampler(amp)
    updates: list[Update] = []
    try:
        with sampler.running():
            for n in range(reloads):
                updates.append(apply(amp, shaped))
                if n % 10 == 9:
                    print(f"{n + 1} updates, {load.ok} requests answered, {load.failed} failed", flush=True)
    finally:
        load.__exit__(None, None, None)
    failed = [u for u in updates if u.status != 202]
    seconds = sorted(u.seconds for u in updates)
    time.sleep(10)
    after = meminfo(amp)["MemAvailable"]
    lowest = min(sampler.available, default=0.0)
    peak = max(sampler.haproxy, default=0.0)
    return [
        Figure(
            f"failed requests across {reloads} updates (PUT + reload) under traffic",
            f"{load.failed} of {load.ok + load.failed:,}",
            "0",
            met=load.failed == 0,
        ),
        Figure(
            "updates answered 202",
            f"{len(updates) - len(failed)} of {len(updates)}",
            "all",
            baseline=failed[0].reason if failed else "-",
            met=not failed,
        ),
        Figure(
            "update (PUT + reload), median / max", f"{seconds[len(seconds) // 2]:.1f} / {seconds[-1]:.1f} s"
        ),
        Figure("MemAvailable during the updates, lowest", f"{lowest:.0f} MiB"),
        Figure("haproxy RSS (all processes) during the updates, highest", f"{peak:.0f} MiB"),
        Figure(
            "Shmem (SSL session caches) during the updates, highest",
            f"{max(sampler.shmem, default=0):.0f} MiB",
        ),
        Figure("haproxy processes during the updates, most", str(max(sampler.processes, default=0))),
        Figure("MemAvailable 10 s after the updates", f"{after:.0f} MiB", ">= 700 MiB", met=after >= 700),
        Figure("haproxy processes after the updates", str(len(rss(amp, "haproxy")))),
    ]


def memory(net: vm.VmLab, controller: Controller, image: Path, reloads: int) -> list[Figure]:
    """Boot, idle figures, the four shapes, then the updates under traffic."""
    members = namespaces.Backends()
    networks = tenant.TenantNetworks(net, tuple(address for address, _ in MEMBERS))
    try:
        networks.create()
        for n, (address, port) in enumerate(MEMBERS):
            members.start(address, port, f"member-{n + 1}", netns=networks.member.name)
        with (
            boot_amphora(net, image, controller, CONTROLLER_FIXTURES, name="memory") as amp,
            console_on_error(amp),
        ):
            time.sleep(max(0.0, 60.0 - (time.monotonic() - amp.vm.started_at)))
            idle = meminfo(amp)["MemAvailable"]
            figures = [
                Figure(
                    "idle a minute after start, MemAvailable",
                    f"{idle:.0f} MiB",
                    ">= 800 MiB",
                    met=idle >= 800,
                ),
                Figure("idle, agent RSS", f"{sum(rss(amp, 'amphora-agent')):.1f} MiB", "<= 50 MiB"),
            ]
            plug(amp, networks)
            for name, limits in (("the fixtures' limits", FIXTURE_LIMITS), ("limits unset", None)):
                for count in (10, 100):
                    figures += shape_figures(amp, networks.client, name, count, limits)
            figures += reload_figures(amp, networks.client, reloads)
    finally:
        members.stop()
        networks.destroy()
    return figures


@contextmanager
def console_on_error(amp: Amphora) -> Iterator[None]:
    """On an error, print the end of the VM's serial console (the kernel's OOM reports land there)."""
    try:
        yield
    except BaseException:
        print(f"serial console of {amp.vm.name}:\n{amp.vm.console()[-4000:]}", flush=True)
        raise


def plug(amp: Amphora, networks: tenant.TenantNetworks) -> None:
    """Hot-plug the VIP and member ports and plug them with the controller's bodies."""
    requests = CONTROLLER_FIXTURES / "requests"
    vip_body = (requests / "plug-vip-active-standby-amp-a.json").read_bytes()
    network_body = (requests / "plug-network.json").read_bytes()
    amp.vm.hotplug("fa:16:3e:a0:00:01", tenant.VIP_BRIDGE, "port-vip")
    amp.vm.hotplug("fa:16:3e:a0:00:02", tenant.MEMBER_BRIDGE, "port-member")
    vm.wait_for(
        "the ports in the guest", lambda: amp.guest("ip", "-br", "link").count("fa:16:3e:a0:00:0") == 2, 60
    )
    with amp.client() as api:
        for path, body in ((f"/1.0/plug/vip/{tenant.VIP}", vip_body), ("/1.0/plug/network", network_body)):
            reply = api.request("POST", path, content=body)
            if reply.status_code != 202:
                raise RuntimeError(f"POST {path}: {reply.status_code} {reply.text}")


def main(argv: list[str] | None = None) -> int:
    """Memory, then active-standby; print the figures; 1 when a target is missed."""
    from bench import vm_pair

    parser = argparse.ArgumentParser(prog="python -m bench.vm_bench", description=__doc__)
    parser.add_argument("--reloads", type=int, default=100, help="updates under traffic (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="failovers of the MASTER (default 3)")
    parser.add_argument("--only", choices=("memory", "failover"), help="run one half")
    args = parser.parse_args(argv)
    image = test_image()
    namespaces.isolate()
    print(f"vm bench: {loadavg()}, accelerator {vm.accelerator()}", flush=True)
    figures: dict[str, list[Figure]] = {}
    with tempfile.TemporaryDirectory(prefix="ampvmb") as tmp, vm.lab(Path(tmp)) as net:
        controller = Controller(Path(tmp))
        controller.listen()
        try:
            if args.only in (None, "memory"):
                figures["memory in the 1 GiB amphora VM"] = memory(net, controller, image, args.reloads)
                print_figures("memory in the 1 GiB amphora VM", figures["memory in the 1 GiB amphora VM"])
            if args.only in (None, "failover"):
                figures["active-standby across two VMs"] = vm_pair.failover(
                    net, controller, image, args.rounds
                )
        finally:
            controller.close()
    for title, rows in figures.items():  # all together again at the end
        print_figures(title, rows, note=loadavg())
    return 1 if any(f.met is False for rows in figures.values() for f in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

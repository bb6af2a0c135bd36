"""``python -m bench image``: the amphora image's build, size, boot and idle figures beside the targets.

Builds the production image from scratch (package and wheel caches warm), then boots the test build
(the same image plus qemu-guest-agent, which reads the figures inside the VM) under qemu in a private
lab network, alternating two kinds of boot ``--rounds`` times (3 by default): with the controller's
four config-drive files, and without the agent's config (its unit is then skipped by its condition:
the same image without the agent). Figures are medians over the rounds, so one slow boot (TCG on a
shared machine) does not decide "the agent adds <= 25 %". Timings are wall-clock from qemu's start
as seen from outside; ``--no-build`` reuses the cached images.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import re
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.devcerts import CertificateAuthority
from lab import configdrive, vm

REPO = Path(__file__).resolve().parents[1]
AMPHORA_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"
FIXTURE_CONF = REPO / "tests" / "data" / "controller" / "agent" / "amphora-agent.conf"
CLONE_NEWNET = 0x40000000
MIB = 1024 * 1024


@dataclass
class Row:
    """One figure: measured value beside its target; ``met`` None when there is no target."""

    name: str
    value: str
    target: str = "-"
    met: bool | None = None


def isolate() -> None:
    """Move this single-threaded process into a new network namespace (nothing touches the host)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    vm.run(["ip", "link", "set", "lo", "up"])


def build(*args: str) -> float:
    """Run image/build.sh; seconds it took."""
    started = time.monotonic()
    subprocess.run([str(REPO / "image" / "build.sh"), *args], check=True, timeout=1800)
    return time.monotonic() - started


def fixture_conf() -> str:
    """The controller's rendered agent config (vendored in tests/data/controller)."""
    return FIXTURE_CONF.read_text()


def drive(work: Path, ca: CertificateAuthority, with_agent: bool, name: str) -> Path:
    """A Nova config drive with the controller's files (without the agent config when asked)."""
    files = {
        configdrive.SERVER_PEM: ca.issue(AMPHORA_ID, server=True).bundle.decode(),
        configdrive.CLIENT_CA: ca.cert_pem.decode(),
        configdrive.AGENT_CONF: configdrive.agent_config(fixture_conf(), [f"{vm.CALLER_ADDRESS}:5555"]),
        configdrive.RSYSLOG_CONF: configdrive.render_rsyslog(
            [configdrive.LogTarget(vm.CALLER_ADDRESS, 10514)], []
        ),
    }
    if not with_agent:
        del files[configdrive.AGENT_CONF]
    return configdrive.make_iso(configdrive.write_tree(work / name, files, AMPHORA_ID), work / f"{name}.iso")


def mtls_answers(address: str, ctx: ssl.SSLContext) -> bool:
    """Whether ``GET /1.0/info`` answers 200 over mutual TLS."""
    try:
        with (
            socket.create_connection((address, 9443), timeout=2) as raw,
            ctx.wrap_socket(raw, server_hostname=AMPHORA_ID) as tls,
        ):
            tls.sendall(b"GET /1.0/info HTTP/1.1\r\nHost: amphora\r\nConnection: close\r\n\r\n")
            return tls.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def multi_user(guest: vm.GuestAgent) -> bool:
    """Whether the guest reached multi-user.target (asked through the guest agent)."""
    try:
        return guest.run(["systemctl", "is-active", "multi-user.target"], timeout=5)[1].strip() == "active"
    except (OSError, RuntimeError, TimeoutError, ValueError):
        return False


Boot = dict[str, float | str]


def wait_multi_user(guest: vm.GuestAgent, started_at: float, out: Boot) -> None:
    """Record in ``out`` when the guest reached multi-user.target (seconds from qemu's start)."""
    with contextlib.suppress(TimeoutError):
        vm.wait_for("multi-user.target", lambda: multi_user(guest), 300, interval=0.2)
        out["multi_user"] = time.monotonic() - started_at


def boot(net: vm.VmLab, image: Path, iso: Path, ctx: ssl.SSLContext | None, name: str) -> Boot:
    """Boot once; wall times from qemu's start and, with ``ctx``, the agent's figures a minute in."""
    out: Boot = {}
    mac = "fa:16:3e:00:00:01" if ctx else "fa:16:3e:00:00:02"
    with vm.booted(net, image, iso, mac=mac, name=name) as machine:
        guest = machine.guest()
        address = machine.address(300)
        # multi-user.target is polled beside the mTLS wait, so that neither figure waits for the other
        reached = threading.Thread(target=wait_multi_user, args=(guest, machine.started_at, out))
        reached.start()
        try:
            if ctx is not None:
                vm.wait_for("mTLS", lambda: mtls_answers(address, ctx), 300, interval=0.2)
                out["mtls"] = time.monotonic() - machine.started_at
        finally:
            reached.join()
        if "multi_user" not in out:
            raise TimeoutError(f"{name}: multi-user.target not reached")
        out["analyze"] = guest.run(["systemd-analyze"])[1].splitlines()[0]
        total = re.search(r"= ([\d.]+)s\b", str(out["analyze"]))  # not "= 1min 2.3s": no figure then
        if total:
            out["startup"] = float(total[1])
        if ctx is None:
            return out
        journal = guest.run(
            ["journalctl", "-b", "-u", "amphora-agent", "-o", "short-monotonic", "--no-pager"]
        )[1]
        stamps = re.findall(r"^\[\s*([\d.]+)\].*?(Started amphora-agent|listening on)", journal, re.M)
        marks = {what: float(at) for at, what in stamps}
        if {"Started amphora-agent", "listening on"} <= marks.keys():
            out["unit"] = marks["listening on"] - marks["Started amphora-agent"]
        time.sleep(max(0.0, 60.0 - (time.monotonic() - machine.started_at)))  # idle a minute after start
        rss = guest.run(["ps", "-o", "rss=", "-C", "amphora-agent"])[1].split()
        out["rss"] = sum(int(kib) for kib in rss) / 1024
        meminfo = guest.run(["cat", "/proc/meminfo"])[1]
        for key, field in (("available", "MemAvailable"), ("total", "MemTotal"), ("free", "MemFree")):
            out[key] = int(re.search(rf"{field}:\s+(\d+)", meminfo)[1]) / 1024  # type: ignore[index]
        out["min_free"] = int(guest.run(["cat", "/proc/sys/vm/min_free_kbytes"])[1]) / 1024
    return out


def median(boots: list[Boot], key: str) -> tuple[float, str]:
    """The median of one figure over the boots, and every value (in boot order) for the table."""
    values = [float(b[key]) for b in boots if key in b]
    return statistics.median(values), ", ".join(f"{v:.1f}" for v in values)


def figures(build_s: float | None, with_agent: list[Boot], without: list[Boot]) -> list[Row]:
    """Every figure beside its target (medians over the boots of each kind)."""
    version = re.search(r'^version = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M)[1]  # type: ignore[index]
    qcow2 = REPO / "build" / f"amphora-{version}.qcow2"
    manifest = REPO / "build" / f"amphora-{version}.packages"
    rows = []
    if build_s is not None:
        rows.append(Row("build (from scratch, caches warm)", f"{build_s:.0f} s", "<= 240 s", build_s <= 240))
    if qcow2.exists():
        size = qcow2.stat().st_size / MIB
        rows.append(Row("qcow2 size", f"{size:.0f} MiB", "<= 250 MB", size * MIB <= 250e6))
    if manifest.exists():
        rows.append(Row("Debian packages in the image", str(len(manifest.read_text().splitlines()))))
    (mtls, mtls_all), (mu_with, with_all) = median(with_agent, "mtls"), median(with_agent, "multi_user")
    mu_without, without_all = median(without, "multi_user")
    n = f"median of {len(with_agent)}"
    startup_with, startup_without = median(with_agent, "startup")[0], median(without, "startup")[0]
    startup_ratio = 100 * (startup_with / startup_without - 1)
    rows += [
        Row(
            f"qemu start -> agent answers mTLS (TCG), {n}",
            f"{mtls:.1f} s ({mtls_all})",
            "<= 40 s",
            mtls <= 40,
        ),
        Row(f"qemu start -> multi-user.target, {n}", f"{mu_with:.1f} s ({with_all})"),
        Row(f"same image without the agent -> multi-user, {n}", f"{mu_without:.1f} s ({without_all})"),
        Row(
            "the agent's unit adds to the boot (medians)",
            f"{100 * (mu_with / mu_without - 1):+.0f} % (to mTLS: {100 * (mtls / mu_without - 1):+.0f} %)",
            "<= 25 %",
            mu_with <= 1.25 * mu_without,
        ),
        Row(
            f"kernel start -> multi-user.target (systemd-analyze), {n}",
            f"with {startup_with:.1f} s, without {startup_without:.1f} s: {startup_ratio:+.0f} %",
        ),
        Row("systemd-analyze (with agent, last boot)", str(with_agent[-1]["analyze"])),
        Row("systemd-analyze (without agent, last boot)", str(without[-1]["analyze"])),
    ]
    if any("unit" in b for b in with_agent):
        unit, unit_all = median(with_agent, "unit")
        rows.append(Row("agent unit start -> listening", f"{unit:.1f} s ({unit_all})"))
    (rss, rss_all), (available, available_all) = median(with_agent, "rss"), median(with_agent, "available")
    total, min_free = median(with_agent, "total")[0], median(with_agent, "min_free")[0]
    rows += [
        Row("agent RSS idle (1 GiB VM)", f"{rss:.1f} MiB ({rss_all})", "<= 50 MiB", rss <= 50),
        Row("MemAvailable idle, a minute after start", f"{available:.0f} MiB ({available_all})", ">= 800 MiB",
            available >= 800),
        Row("MemTotal (1024 MiB less the kernel's own)", f"{total:.0f} MiB"),
        Row("vm.min_free_kbytes (watermarks MemAvailable leaves out)", f"{min_free:.1f} MiB"),
    ]  # fmt: skip
    return rows


def show(rows: list[Row]) -> None:
    """An aligned table: figure | measured | target | verdict."""
    header = Row("figure", "measured", "target")
    widths = [max(len(getattr(r, key)) for r in [header, *rows]) for key in ("name", "value", "target")]
    print(f"\n== amphora image ({vm.accelerator().upper()}) ==")
    for index, r in enumerate([header, *rows]):
        verdict = "verdict" if index == 0 else {True: "ok", False: "MISSED", None: ""}[r.met]
        print(
            "  ".join(c.ljust(w) for c, w in zip((r.name, r.value, r.target), widths, strict=True)), verdict
        )


def main(argv: list[str] | None = None) -> int:
    """Build, boot ``--rounds`` times each way (alternating), print the figures; 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.image_bench", description=__doc__)
    parser.add_argument("--no-build", action="store_true", help="reuse the cached images (no build time)")
    parser.add_argument("--rounds", type=int, default=3, help="boots of each kind, alternating (default 3)")
    args = parser.parse_args(argv)
    build_s = None if args.no_build else build("--force")
    if args.no_build:
        build()
    image = Path(subprocess.run([str(REPO / "image/build.sh"), "--test", "--print-path"], check=True,
                                capture_output=True, text=True, timeout=1800).stdout.split()[-1])  # fmt: skip
    isolate()
    ca = CertificateAuthority("bench CA")
    with tempfile.TemporaryDirectory(prefix="ampbench") as tmp, vm.lab(Path(tmp)) as net:
        work = Path(tmp)
        (work / "ca.pem").write_bytes(ca.cert_pem)
        (work / "client.pem").write_bytes(ca.issue("controller", server=False).bundle)
        ctx = ssl.create_default_context(cafile=str(work / "ca.pem"))
        ctx.load_cert_chain(str(work / "client.pem"))
        drives = drive(work, ca, True, "with"), drive(work, ca, False, "without")
        with_agent: list[Boot] = []
        without: list[Boot] = []
        for n in range(max(1, args.rounds)):  # alternating: a slow spell of the machine hits both kinds
            with_agent.append(boot(net, image, drives[0], ctx, f"with{n}"))
            without.append(boot(net, image, drives[1], None, f"without{n}"))
            print(f"round {n + 1}: with {with_agent[-1]['multi_user']:.1f} s, "
                  f"without {without[-1]['multi_user']:.1f} s", flush=True)  # fmt: skip
    rows = figures(build_s, with_agent, without)
    show(rows)
    return 1 if any(r.met is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())

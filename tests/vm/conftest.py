"""The amphora image booted under qemu: one test build per run, real everything.

The image comes from ``image/build.sh --test`` (skipped when its input hash is current: ``make
test`` runs it before pytest). The test plays the controller (``lab.amphora_vm``: the config drive,
heartbeat and syslog receivers, the mTLS client) and Nova: ports are attached to the running VM
with QMP, as Nova attaches them.

Boots are what cost (20-60 s each under TCG), so a session boots twice: once with the
``user_data`` form of the config drive (its module runs first, alone), then one VM that every
other module shares, in the order of ``VM_MODULES``: the image itself, ports, listeners, UDP/SCTP,
and the reset last.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import tenant, vm
from lab.amphora_vm import Amphora, Controller, config_drive, ready

REPO = Path(__file__).resolve().parents[2]
# the session's VM modules in the order they must run: its own boot first, then the shared VM
VM_MODULES = (
    "test_user_data_vm",
    "test_amphora_vm",
    "test_vm_ports",
    "test_vm_listeners",
    "test_vm_l4",
    "test_vm_reboot",
)
# member servers on the tenant side: multi-listener (web, TCP, re-encrypting pool), single-http, UDP
MEMBERS = ("203.0.113.21", "203.0.113.22", "203.0.113.31", "203.0.113.41", "203.0.113.42",
           "203.0.113.11", "203.0.113.12", "203.0.113.61", "203.0.113.62")  # fmt: skip

pytestmark = pytest.mark.vm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests run in ``VM_MODULES`` order; they need root (namespaces, tap devices, image build)."""
    slots = [n for n, item in enumerate(items) if item.path.stem in VM_MODULES]
    ordered = sorted((items[n] for n in slots), key=lambda item: VM_MODULES.index(item.path.stem))
    for n, item in zip(slots, ordered, strict=True):
        items[n] = item
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for the image build, network namespaces and tap devices")
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vm_image() -> Path:
    """The test build of the image (with qemu-guest-agent), current by its input hash.

    ``make test`` builds it before pytest: the suite runs in a namespace without a network.
    """
    done = subprocess.run(
        [str(REPO / "image" / "build.sh"), "--test", "--print-path", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(done.stderr[-4000:])
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def lab_net() -> Iterator[tuple[vm.VmLab, Controller]]:
    """The management network (namespace, bridge, dnsmasq) and the controller's sockets in ours."""
    with tempfile.TemporaryDirectory(prefix="ampvm") as tmp, vm.lab(Path(tmp)) as net:
        controller = Controller(Path(tmp))
        controller.listen()
        try:
            yield net, controller
        finally:
            controller.close()


@pytest.fixture(scope="session")
def shared_vm(
    vm_image: Path, lab_net: tuple[vm.VmLab, Controller], fixtures_dir: Path
) -> Iterator[tuple[vm.Vm, dict[str, str]]]:
    """The session's VM started (``files`` form of the config drive), not waited for: the user_data
    boot asks for it, so both boot at the same time; stopped by PID at the end of the session."""
    net, controller = lab_net
    iso, files = config_drive(net, controller, fixtures_dir, "files")
    with vm.booted(net, vm_image, iso, name="files") as machine:
        yield machine, files


@pytest.fixture(scope="session")
def amphora(shared_vm: tuple[vm.Vm, dict[str, str]], lab_net: tuple[vm.VmLab, Controller]) -> Amphora:
    """The session's VM once its agent answers, shared by the modules."""
    controller = lab_net[1]
    machine, files = shared_vm
    amp = ready(machine, controller, files)
    for name in controller.sockets:  # what an earlier VM sent (same amphora id) is not this one's
        controller.drain(name)
    return amp


@pytest.fixture(scope="session")
def tenant_net(lab_net: tuple[vm.VmLab, Controller]) -> Iterator[tenant.TenantNetworks]:
    """The VIP and member networks (bridges in the lab) with a client and a member namespace."""
    networks = tenant.TenantNetworks(lab_net[0], MEMBERS)
    try:
        yield networks.create()
    finally:
        networks.destroy()


@dataclass(frozen=True)
class Ports:
    """The VIP and member ports attached to the VM and plugged with the controller's bodies."""

    vip_mac: str
    member_mac: str
    vrrp_ip: str
    member_ip: str
    vip_reply: tuple[int, dict[str, Any]]
    network_reply: tuple[int, dict[str, Any]]
    attach_seconds: float


def request_body(fixtures: Path, name: str) -> bytes:
    """A JSON request body exactly as the controller put it on the wire."""
    return (fixtures / "requests" / name).read_bytes()


def nic_in_guest(amp: Amphora, mac: str) -> bool:
    """Whether the guest lists a NIC with ``mac`` in its own namespace (looked up by the guest agent)."""
    return mac in amp.guest("ip", "-br", "link")


@pytest.fixture(scope="session")
def ports(amphora: Amphora, tenant_net: tenant.TenantNetworks, fixtures_dir: Path) -> Ports:
    """Nova attaches the VIP and the member port; the controller plugs them (POST plug vip / network)."""
    vip_body = request_body(fixtures_dir, "plug-vip-active-standby-amp-a.json")
    network_body = request_body(fixtures_dir, "plug-network.json")
    vip, network = json.loads(vip_body), json.loads(network_body)
    started = time.monotonic()
    amphora.vm.hotplug(vip["mac_address"], tenant.VIP_BRIDGE, "port-vip")
    amphora.vm.hotplug(network["mac_address"], tenant.MEMBER_BRIDGE, "port-member")
    vm.wait_for(
        "both ports in the guest",
        lambda: all(nic_in_guest(amphora, port["mac_address"]) for port in (vip, network)),
        60,
        interval=0.3,
    )
    attached = time.monotonic() - started
    with amphora.controller.client(amphora.address) as api:
        plugged_vip = api.request("POST", f"/1.0/plug/vip/{tenant.VIP}", content=vip_body)
        plugged = api.request("POST", "/1.0/plug/network", content=network_body)
    return Ports(
        vip_mac=vip["mac_address"],
        member_mac=network["mac_address"],
        vrrp_ip=vip["vrrp_ip"],
        member_ip=network["fixed_ips"][0]["ip_address"],
        vip_reply=(plugged_vip.status_code, plugged_vip.json()),
        network_reply=(plugged.status_code, plugged.json()),
        attach_seconds=attached,
    )

"""Ports as Nova attaches them (QMP hot-plug) and the controller plugs them, in the real VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import tenant
from lab.amphora_vm import Amphora
from tests.vm.conftest import Ports, request_body

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
NS = "amphora-haproxy"
EXPLODED_VIP6 = "2001:0db8:0100:0000:0000:0000:0000:0140"  # the existing agent's answer explodes IPv6


def in_namespace(amp: Amphora, *argv: str) -> str:
    """A command in the guest's haproxy namespace (the guest agent only looks)."""
    return amp.guest("ip", "netns", "exec", NS, *argv)


def test_the_plugs_find_the_hot_plugged_nics_by_mac(ports: Ports) -> None:
    """Both NICs show up in the guest; plug VIP and plug network answer as the controller expects."""
    assert ports.attach_seconds < 60
    assert ports.vip_reply == (
        202,
        {
            "message": "OK",
            "details": f"VIPs plugged on interface eth1: {tenant.VIP}, {EXPLODED_VIP6}",
        },
    )
    assert ports.network_reply == (202, {"message": "OK", "details": "Plugged on interface eth2"})


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("198.51.100.141", (200, "eth1")),  # the vrrp_ip: how the controller finds the VRRP interface
        (tenant.VIP, (200, "eth1")),
        ("2001:db8:100::140", (200, "eth1")),
        ("203.0.113.10", (200, "eth2")),
        ("2001:db8:200::10", (200, "eth2")),
        ("203.0.113.99", (404, None)),
    ],
)
def test_interface_lookup(
    amphora: Amphora, ports: Ports, address: str, expected: tuple[int, str | None]
) -> None:
    """``GET /1.0/interface/<ip>`` names the NIC holding the address in the haproxy namespace."""
    with amphora.controller.client(amphora.address) as api:
        reply = api.request("GET", f"/1.0/interface/{address}")
    assert (reply.status_code, reply.json().get("interface")) == expected


def test_the_haproxy_namespace_holds_the_ports_as_the_controller_described_them(
    amphora: Amphora, ports: Ports
) -> None:
    """eth1: vrrp_ip, VIPs, MTU 1450, table 1 and its rule; eth2: the fixed IPs and the host route."""
    links = in_namespace(amphora, "ip", "-br", "link")
    assert {line.split()[0]: line.split()[2] for line in links.splitlines()[1:]} == {
        "eth1": ports.vip_mac,
        "eth2": ports.member_mac,
    }
    addresses = in_namespace(amphora, "ip", "-br", "address")
    assert "198.51.100.141/25 198.51.100.140/32 2001:db8:100::140/128" in addresses
    assert "203.0.113.10/25 2001:db8:200::10/64" in addresses
    assert "mtu 1450" in in_namespace(amphora, "ip", "link", "show", "eth1")
    table1 = in_namespace(amphora, "ip", "route", "show", "table", "1")
    assert "default via 198.51.100.129 dev eth1" in table1
    assert "203.0.113.192/27 via 198.51.100.254 dev eth1" in table1
    assert "from 198.51.100.140 lookup 1" in in_namespace(amphora, "ip", "rule")
    assert "203.0.113.224/27 via 203.0.113.126 dev eth2" in in_namespace(amphora, "ip", "route")


def test_ipvs_settings_hold_in_the_namespace(amphora: Amphora, ports: Ports) -> None:
    """ip_vs is loaded before the namespace settings: IPVS keeps conntrack, so members see NAT."""
    values = in_namespace(
        amphora,
        "sysctl",
        "-n",
        "net.ipv4.ip_forward",
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
    )
    assert values.split() == ["1", "1", "1"]


def test_the_images_network_settings_hold_in_the_namespace(amphora: Amphora, ports: Ports) -> None:
    """As ``sysctl --system`` in the namespace gives them to the existing agent: a standby's haproxy
    binds the VIP it does not hold (nonlocal bind), and the TCP tuning is the image's."""
    keys = (
        "net.ipv4.ip_nonlocal_bind",
        "net.ipv6.ip_nonlocal_bind",
        "net.core.somaxconn",
        "net.ipv4.tcp_fin_timeout",
    )
    assert in_namespace(amphora, "sysctl", "-n", *keys).split() == ["1", "1", "65534", "5"]


def test_plugs_sent_again_are_answered_as_the_controller_expects(
    amphora: Amphora, ports: Ports, fixtures_dir: Path
) -> None:
    """The controller retries: plug VIP again is a 409, plug network again updates eth2 in place."""
    with amphora.controller.client(amphora.address) as api:
        again = api.request(
            "POST",
            f"/1.0/plug/vip/{tenant.VIP}",
            content=request_body(fixtures_dir, "plug-vip-active-standby-amp-a.json"),
        )
        assert (again.status_code, again.json()) == (409, {"message": "Interface already exists"})
        update = api.request(
            "POST", "/1.0/plug/network", content=request_body(fixtures_dir, "plug-network.json")
        )
        assert (update.status_code, update.json()["details"]) == (202, "Updated existing interface eth2")

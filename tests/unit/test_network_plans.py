"""Plug requests become typed plugs, and plugs become the interface definitions of reference 7.4/7.5."""

from __future__ import annotations

import json
from typing import Any

import pytest

from amphora_agent.errors import InvalidInput
from amphora_agent.network import plans
from amphora_agent.network.interfaces import Interface
from amphora_agent.network.plans import BadBody
from tests.conftest import FIXTURES

REQUESTS = FIXTURES / "requests"
MASQ = "/usr/local/bin/lvs-masquerade.sh"


def fixture(name: str) -> bytes:
    """A controller request body, as sent."""
    return (REQUESTS / name).read_bytes()


def edited(name: str, **changes: Any) -> bytes:
    """A controller request body with some keys replaced (None deletes the key)."""
    data = json.loads(fixture(name))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


def scripts(name: str, *families: int, sriov: bool = False) -> dict[str, list[dict[str, str]]]:
    """The expected lvs-masquerade.sh entries."""
    tail = " sriov" if sriov else ""
    return {
        "up": [{"command": f"{MASQ} add ipv{f} {name}{tail}"} for f in families],
        "down": [{"command": f"{MASQ} delete ipv{f} {name}{tail}"} for f in families],
    }


# -- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vip", "body", "kind", "message"),
    [
        ("198.51.100.10", b"not json", BadBody, "Invalid subnet information"),
        ("198.51.100.10", b"[]", BadBody, "Invalid subnet information"),
        ("198.51.100.10", b"", BadBody, "Invalid subnet information"),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", gateway=None),
            BadBody,
            "Invalid subnet information",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", mac_address=None),
            BadBody,
            "Invalid subnet information",
        ),
        (
            "notanip",
            fixture("plug-vip-single-ipv4.json"),
            InvalidInput,
            "Invalid VIP: 'notanip' does not appear to be an IPv4 or IPv6 address",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", subnet_cidr="198.51.100.1/26"),
            InvalidInput,
            "Invalid VIP: 198.51.100.1/26 has host bits set",
        ),
        (
            "198.51.100.200",
            fixture("plug-vip-single-ipv4.json"),
            InvalidInput,
            "Invalid VIP: 198.51.100.200 is not in 198.51.100.0/26",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", vrrp_ip="x"),
            InvalidInput,
            "Invalid VRRP Address: 'x' does not appear to be an IPv4 or IPv6 address",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", vrrp_ip="2001:db8::1"),
            InvalidInput,
            "Invalid VRRP Address: 2001:db8::1 is not an IPv4 address",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", gateway="nope"),
            InvalidInput,
            "Invalid VIP: 'nope' does not appear to be an IPv4 or IPv6 address",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", host_routes=[{"destination": "203.0.113.0/24"}]),
            InvalidInput,
            "Invalid VIP: a host route needs destination and nexthop: {'destination': '203.0.113.0/24'}",
        ),
        (
            "198.51.100.10",
            edited(
                "plug-vip-single-ipv4.json",
                additional_vips=[{"ip_address": "2001:db8:101::5", "subnet_cidr": "2001:db8:101::/64"}],
            ),
            InvalidInput,
            "Invalid VIP: additional_vips[0] lacks gateway, host_routes",
        ),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", mac_address="fa:16:3e"),
            InvalidInput,
            "Invalid MAC address",
        ),
        ("198.51.100.10", edited("plug-vip-single-ipv4.json", mtu="1500"), InvalidInput, "Invalid MTU"),
        ("198.51.100.10", edited("plug-vip-single-ipv4.json", mtu=12), InvalidInput, "Invalid MTU"),
        (
            "198.51.100.10",
            edited("plug-vip-single-ipv4.json", is_sriov="yes"),
            InvalidInput,
            "Invalid is_sriov",
        ),
    ],
)
def test_bad_plug_vip_bodies(vip: str, body: bytes, kind: type[Exception], message: str) -> None:
    """Each malformed plug-VIP request is refused with the existing agent's 400 text."""
    with pytest.raises(kind) as caught:
        plans.parse_plug_vip(vip, body)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b"{}", BadBody, "Invalid port information"),
        (b"null", BadBody, "Invalid port information"),
        (b"{]", BadBody, "Invalid port information"),
        (
            edited(
                "plug-network.json",
                fixed_ips=[{"ip_address": "203.0.113.300", "subnet_cidr": "203.0.113.0/25"}],
            ),
            InvalidInput,
            "Invalid network port",
        ),
        (
            edited("plug-network.json", fixed_ips=[{"ip_address": "203.0.113.10"}]),
            InvalidInput,
            "Invalid network port",
        ),
        (edited("plug-network.json", fixed_ips=["203.0.113.10"]), InvalidInput, "Invalid network port"),
        (edited("plug-network.json", fixed_ips="203.0.113.10"), InvalidInput, "Invalid network port"),
        (edited("plug-network.json", mac_address=5), InvalidInput, "Invalid MAC address"),
        (
            edited("plug-network.json", vip_net_info={"subnet_cidr": "x"}),
            InvalidInput,
            "Invalid VIP: vip_net_info",
        ),
    ],
)
def test_bad_plug_network_bodies(body: bytes, kind: type[Exception], message: str) -> None:
    """Each malformed plug-network request is refused with a 400 and a clear message."""
    with pytest.raises(kind) as caught:
        plans.parse_plug_network(body)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.message.startswith(message)


def test_mac_is_normalised_to_the_kernel_form() -> None:
    """An upper-case MAC matches the kernel's lower-case one."""
    plug = plans.parse_plug_vip(
        "198.51.100.10", edited("plug-vip-single-ipv4.json", mac_address="FA:16:3E:5A:00:01")
    )
    assert plug.mac == "fa:16:3e:5a:00:01"


def test_every_controller_plug_vip_fixture_parses() -> None:
    """All plug-VIP bodies the controller renders are accepted."""
    for name, vip in [
        ("plug-vip-single-ipv4.json", "198.51.100.10"),
        ("plug-vip-active-standby-amp-a.json", "198.51.100.140"),
        ("plug-vip-active-standby-amp-b.json", "198.51.100.140"),
        ("plug-vip-active-standby-sriov-amp-a.json", "198.51.100.140"),
        ("plug-vip-ipv6.json", "2001:db8:101::10"),
    ]:
        plug = plans.parse_plug_vip(vip, fixture(name))
        assert str(plug.vips[0].address) == vip


# -- plans --------------------------------------------------------------------------------------------
def test_single_ipv4_vip_plan() -> None:
    """SINGLE: VIP owned, default + link routes in main and table 1, a source rule to table 1."""
    plug = plans.parse_plug_vip("198.51.100.10", fixture("plug-vip-single-ipv4.json"))
    assert plans.vip_interface(plug, "SINGLE").to_json() == {
        "name": "eth1",
        "if_type": "vip",
        "addresses": [
            {"address": "198.51.100.11", "prefixlen": 26},
            {"address": "198.51.100.10", "prefixlen": 32, "octavia_owned": True},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gateway": "198.51.100.1", "flags": ["onlink"]},
            {"dst": "0.0.0.0/0", "gateway": "198.51.100.1", "flags": ["onlink"], "table": 1},
            {"dst": "198.51.100.0/26", "scope": "link"},
            {"dst": "198.51.100.0/26", "prefsrc": "198.51.100.10", "scope": "link", "table": 1},
        ],
        "rules": [{"src": "198.51.100.10", "src_len": 32, "table": 1}],
        "scripts": scripts("eth1", 4),
        "is_sriov": False,
        "mtu": 1500,
    }


def test_active_standby_vip_plan_leaves_vips_and_table_1_to_keepalived() -> None:
    """ACTIVE_STANDBY: VIPs not owned, no table-1 default or prefsrc routes, no rules; host routes in both."""
    plug = plans.parse_plug_vip("198.51.100.140", fixture("plug-vip-active-standby-amp-a.json"))
    six = "2001:0db8:0100:0000:0000:0000:0000:0140"
    assert plans.vip_interface(plug, "ACTIVE_STANDBY").to_json() == {
        "name": "eth1",
        "if_type": "vip",
        "addresses": [
            {"address": "198.51.100.141", "prefixlen": 25},
            {"address": "198.51.100.140", "prefixlen": 32, "octavia_owned": False},
            {"address": six, "prefixlen": 128, "octavia_owned": False},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gateway": "198.51.100.129", "flags": ["onlink"]},
            {"dst": "198.51.100.128/25", "scope": "link"},
            {"dst": "203.0.113.192/27", "gateway": "198.51.100.254", "flags": ["onlink"]},
            {"dst": "203.0.113.192/27", "gateway": "198.51.100.254", "flags": ["onlink"], "table": 1},
            {"dst": "::/0", "gateway": "2001:db8:100::1", "flags": ["onlink"]},
            {"dst": "2001:0db8:0100:0000:0000:0000:0000:0000/64", "scope": "link"},
            {"dst": "2001:db8:300::/48", "gateway": "2001:db8:100::fe", "flags": ["onlink"]},
            {"dst": "2001:db8:300::/48", "gateway": "2001:db8:100::fe", "flags": ["onlink"], "table": 1},
        ],
        "rules": [],
        "scripts": scripts("eth1", 4, 6),
        "is_sriov": False,
        "mtu": 1450,
    }


def test_reference_example_single_dual_stack() -> None:
    """The worked example of reference 7.5 (SINGLE, IPv4 VIP with a host route, IPv6 additional VIP)."""
    body = json.dumps(
        {
            "subnet_cidr": "203.0.113.0/24",
            "gateway": "203.0.113.1",
            "mac_address": "fa:16:3e:00:00:01",
            "vrrp_ip": "203.0.113.4",
            "host_routes": [{"destination": "198.51.100.0/24", "nexthop": "203.0.113.5"}],
            "additional_vips": [
                {
                    "ip_address": "2001:db8::2",
                    "subnet_cidr": "2001:db8::/64",
                    "gateway": "2001:db8::1",
                    "host_routes": [],
                }
            ],
        }
    ).encode()
    iface = plans.vip_interface(plans.parse_plug_vip("203.0.113.2", body), "SINGLE")
    vip6, net6 = "2001:0db8:0000:0000:0000:0000:0000:0002", "2001:0db8:0000:0000:0000:0000:0000:0000/64"
    assert [(a.address, a.prefixlen, a.octavia_owned) for a in iface.addresses] == [
        ("203.0.113.4", 24, None),
        ("203.0.113.2", 32, True),
        (vip6, 128, True),
    ]
    assert [r.to_json() for r in iface.routes] == [
        {"dst": "0.0.0.0/0", "gateway": "203.0.113.1", "flags": ["onlink"]},
        {"dst": "0.0.0.0/0", "gateway": "203.0.113.1", "flags": ["onlink"], "table": 1},
        {"dst": "203.0.113.0/24", "scope": "link"},
        {"dst": "203.0.113.0/24", "prefsrc": "203.0.113.2", "scope": "link", "table": 1},
        {"dst": "198.51.100.0/24", "gateway": "203.0.113.5", "flags": ["onlink"]},
        {"dst": "198.51.100.0/24", "gateway": "203.0.113.5", "flags": ["onlink"], "table": 1},
        {"dst": "::/0", "gateway": "2001:db8::1", "flags": ["onlink"]},
        {"dst": "::/0", "gateway": "2001:db8::1", "flags": ["onlink"], "table": 1},
        {"dst": net6, "scope": "link"},
        {"dst": net6, "prefsrc": vip6, "scope": "link", "table": 1},
    ]
    assert [(r.src, r.src_len, r.table) for r in iface.rules] == [("203.0.113.2", 32, 1), (vip6, 128, 1)]


def test_ipv6_vip_plan() -> None:
    """An IPv6-only VIP: /128 VIP, the vrrp_ip with the subnet's length, IPv6 masquerade only."""
    plug = plans.parse_plug_vip("2001:db8:101::10", fixture("plug-vip-ipv6.json"))
    iface = plans.vip_interface(plug, "SINGLE")
    assert [(a.address, a.prefixlen) for a in iface.addresses] == [
        ("2001:0db8:0101:0000:0000:0000:0000:0011", 64),
        ("2001:0db8:0101:0000:0000:0000:0000:0010", 128),
    ]
    assert iface.families == (6,)
    assert plans.plugged_details(plug) == (
        "VIPs plugged on interface eth1: 2001:0db8:0101:0000:0000:0000:0000:0010"
    )


def test_sriov_flag_reaches_the_scripts() -> None:
    """An SR-IOV VIP runs lvs-masquerade.sh with ``sriov`` (no TCP notrack)."""
    plug = plans.parse_plug_vip("198.51.100.140", fixture("plug-vip-active-standby-sriov-amp-a.json"))
    iface = plans.vip_interface(plug, "SINGLE")
    assert iface.is_sriov
    assert iface.to_json()["scripts"] == scripts("eth1", 4, 6, sriov=True)


def test_vip_without_vrrp_ip_uses_dynamic_addresses() -> None:
    """No vrrp_ip: DHCP for IPv4 and SLAAC for IPv6, one entry each, as the existing agent writes them."""
    plug = plans.parse_plug_vip("198.51.100.140", edited("plug-vip-active-standby-amp-a.json", vrrp_ip=None))
    data = plans.vip_interface(plug, "SINGLE").to_json()
    assert data["addresses"][:2] == [{"dhcp": True}, {"ipv6auto": True}]


def test_member_port_plan() -> None:
    """A member port: fixed IPs with their subnet lengths, host routes in main only, gateways unused."""
    plug = plans.parse_plug_network(fixture("plug-network.json"))
    assert plans.member_interface(plug, "eth2").to_json() == {
        "name": "eth2",
        "if_type": "backend",
        "addresses": [
            {"address": "203.0.113.10", "prefixlen": 25},
            {"address": "2001:db8:200::10", "prefixlen": 64},
        ],
        "routes": [{"dst": "203.0.113.224/27", "gateway": "203.0.113.126", "flags": ["onlink"]}],
        "rules": [],
        "scripts": scripts("eth2", 4, 6),
        "is_sriov": False,
        "mtu": 1500,
    }


def test_member_port_without_fixed_ips_is_dynamic() -> None:
    """No fixed IPs: one ``{dhcp, ipv6auto}`` entry and masquerade for both versions."""
    plug = plans.parse_plug_network(b'{"mac_address": "fa:16:3e:a0:00:09", "fixed_ips": null}')
    data = plans.member_interface(plug, "eth3").to_json()
    assert data["addresses"] == [{"dhcp": True, "ipv6auto": True}]
    assert data["scripts"] == scripts("eth3", 4, 6)
    assert "mtu" not in data


def test_vrrp_port_replug_keeps_the_vip_and_adds_the_member_subnet() -> None:
    """``vip_net_info``: the VIP definition again plus the port's fixed IPs (reference 7.3, 7.5)."""
    plug = plans.parse_plug_network(fixture("plug-network-vip-net-info.json"))
    assert plug.vip is not None
    iface = plans.vip_interface(plug.vip, "SINGLE", plug.fixed_ips, name="eth1")
    assert [(a.address, a.prefixlen) for a in iface.addresses] == [
        ("198.51.100.141", 25),
        ("198.51.100.140", 32),
        ("198.51.100.141", 25),
        ("198.51.100.70", 26),
    ]
    routes = [r.to_json() for r in iface.routes]
    assert {"dst": "0.0.0.0/0", "gateway": "198.51.100.65", "flags": ["onlink"], "table": 1} in routes
    assert [r.key for r in iface.rules] == [(1, "198.51.100.140", 32)]


@pytest.mark.parametrize(
    ("used", "expected"),
    [(set(), "eth2"), ({"lo", "eth1"}, "eth2"), ({"eth2"}, "eth3"), ({"eth2", "eth4"}, "eth3")],
)
def test_lowest_free_member_name(used: set[str], expected: str) -> None:
    """Member ports get the lowest free ethN from eth2."""
    assert plans.lowest_free_name(used) == expected


@pytest.mark.parametrize(
    "name",
    ["plug-vip-single-ipv4.json", "plug-vip-active-standby-amp-a.json", "plug-vip-ipv6.json"],
)
@pytest.mark.parametrize("topology", ["SINGLE", "ACTIVE_STANDBY"])
def test_definitions_survive_a_round_trip_through_json(name: str, topology: str) -> None:
    """What is stored reads back as the same definition."""
    vip = {"plug-vip-single-ipv4.json": "198.51.100.10", "plug-vip-ipv6.json": "2001:db8:101::10"}
    iface = plans.vip_interface(
        plans.parse_plug_vip(vip.get(name, "198.51.100.140"), fixture(name)), topology
    )
    assert Interface.from_json(json.loads(json.dumps(iface.to_json()))) == iface


def test_announced_addresses_skip_keepalived_ones() -> None:
    """Only addresses the agent owns are announced (keepalived announces the A/S VIPs)."""
    plug = plans.parse_plug_vip("198.51.100.140", fixture("plug-vip-active-standby-amp-a.json"))
    assert plans.announced(plans.vip_interface(plug, "ACTIVE_STANDBY")) == ["198.51.100.141"]
    assert plans.announced(plans.vip_interface(plug, "SINGLE")) == [
        "198.51.100.141",
        "198.51.100.140",
        "2001:0db8:0100:0000:0000:0000:0000:0140",
    ]

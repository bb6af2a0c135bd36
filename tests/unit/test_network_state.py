"""Reconciliation (kernel state vs. definition), the interface store, nftables text and announcements."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from amphora_agent.network import interfaces, nftables
from amphora_agent.network.interfaces import Address, Interface, InterfaceStore, Route, Rule
from amphora_agent.network.plans import BadBody
from amphora_agent.system import announce, netlink
from tests.conftest import FIXTURES

VIP_IFACE = Interface(
    name="eth1",
    if_type="vip",
    addresses=(
        Address("198.51.100.11", 26),
        Address("198.51.100.10", 32, True),
        Address("2001:0db8:0101:0000:0000:0000:0000:0010", 128, False),
    ),
    routes=(
        Route("0.0.0.0/0", "198.51.100.1", onlink=True),
        Route("198.51.100.0/26", prefsrc="198.51.100.10", scope_link=True, table=1),
    ),
    rules=(Rule("198.51.100.10", 32, 1),),
    families=(4,),
)


# -- reconciliation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "add", "delete"),
    [
        ([], ["198.51.100.11", "198.51.100.10"], []),
        ([("198.51.100.11", 26), ("198.51.100.10", 32)], [], []),
        ([("198.51.100.11", 24)], ["198.51.100.11", "198.51.100.10"], [("198.51.100.11", 24)]),
        (
            [("198.51.100.99", 26), ("fe80::1", 64)],
            ["198.51.100.11", "198.51.100.10"],
            [("198.51.100.99", 26)],
        ),
        # keepalived's VIP (octavia_owned false) is neither added nor deleted
        ([("2001:db8:101::10", 128)], ["198.51.100.11", "198.51.100.10"], []),
    ],
)
def test_address_changes(
    current: list[tuple[str, int]], add: list[str], delete: list[tuple[str, int]]
) -> None:
    """Missing owned addresses are added; unknown ones deleted, except link-local and keepalived's."""
    to_add, to_delete = interfaces.address_changes(VIP_IFACE, current)
    assert [a.address for a in to_add] == add
    assert to_delete == delete


def test_dynamic_interfaces_keep_unknown_addresses() -> None:
    """With DHCP or SLAAC, addresses the agent did not list are not removed."""
    dynamic = Interface(name="eth2", if_type="backend", dhcp=True, ipv6auto=True)
    assert interfaces.address_changes(dynamic, [("203.0.113.77", 25)]) == ([], [])


@pytest.mark.parametrize(
    ("current", "add", "delete"),
    [
        ([], 2, []),
        ([("0.0.0.0/0", "198.51.100.1", None, 254), ("198.51.100.0/26", None, "198.51.100.10", 1)], 0, []),
        (
            [("0.0.0.0/0", "198.51.100.1", None, 254), ("203.0.113.0/24", "198.51.100.5", None, 254)],
            1,
            [("203.0.113.0/24", "198.51.100.5", None, 254)],
        ),
    ],
)
def test_route_changes(current: list[netlink.RouteKey], add: int, delete: list[netlink.RouteKey]) -> None:
    """Missing routes are added, stale static ones deleted, compared by (dst, gateway, prefsrc, table)."""
    to_add, to_delete = interfaces.route_changes(VIP_IFACE, current)
    assert len(to_add) == add
    assert to_delete == delete


def test_route_keys_are_normalised() -> None:
    """Exploded IPv6 in a definition equals the kernel's compressed form."""
    route = Route("2001:0db8:0100:0000:0000:0000:0000:0000/64", prefsrc="2001:0db8:0100::140", table=1)
    assert route.key == ("2001:db8:100::/64", None, "2001:db8:100::140", 1)


def test_rule_changes_only_for_vip_interfaces() -> None:
    """Source rules belong to the VIP interface; a member port never touches them."""
    assert interfaces.rule_changes(VIP_IFACE, [(1, "198.51.100.99", 32)]) == (
        [Rule("198.51.100.10", 32, 1)],
        [(1, "198.51.100.99", 32)],
    )
    member = Interface(name="eth2", if_type="backend")
    assert interfaces.rule_changes(member, [(1, "198.51.100.10", 32)]) == ([], [])


# -- the store ------------------------------------------------------------------------------------------
def test_store_records_definitions_and_macs(tmp_path: Path) -> None:
    """save() writes <name>.json (0644) and one ``<mac> <name>`` line per NIC; definitions() reads both."""
    store = InterfaceStore(tmp_path / "interfaces", tmp_path / "plugged_interfaces")
    store.save(VIP_IFACE, "fa:16:3e:5a:00:01")
    member = Interface(
        name="eth2", if_type="backend", addresses=(Address("203.0.113.10", 25),), families=(4,)
    )
    store.save(member, "fa:16:3e:a0:00:02")
    store.save(member, "fa:16:3e:a0:00:02")  # a retry changes nothing
    assert (tmp_path / "plugged_interfaces").read_text() == "fa:16:3e:5a:00:01 eth1\nfa:16:3e:a0:00:02 eth2\n"
    assert (tmp_path / "interfaces" / "eth1.json").stat().st_mode & 0o777 == 0o644
    assert store.definitions() == [VIP_IFACE, member]
    assert [i.mac for i in store.definitions()] == ["fa:16:3e:5a:00:01", "fa:16:3e:a0:00:02"]


def test_store_reuses_a_name_for_a_new_mac(tmp_path: Path) -> None:
    """A name given to a new NIC drops the old NIC's line; forget() removes a rolled-back plug."""
    store = InterfaceStore(tmp_path / "i", tmp_path / "plugged")
    member = Interface(name="eth2", if_type="backend")
    store.save(member, "fa:16:3e:00:00:01")
    store.save(member, "fa:16:3e:00:00:02")
    assert [(p.mac, p.name) for p in store.plugged()] == [("fa:16:3e:00:00:02", "eth2")]
    store.forget("eth2")
    assert store.plugged() == [] and store.definitions() == []


def test_store_reads_the_existing_agents_file(tmp_path: Path) -> None:
    """A definition in the existing agent's format (no ``is_sriov``) reads back."""
    store = InterfaceStore(tmp_path, tmp_path / "plugged")
    legacy = {
        "name": "eth2",
        "if_type": "backend",
        "addresses": [{"address": "203.0.113.10", "prefixlen": 25}],
        "routes": [],
        "rules": [],
        "scripts": {"up": [{"command": "/usr/local/bin/lvs-masquerade.sh add ipv4 eth2"}], "down": []},
    }
    (tmp_path / "eth2.json").write_text(json.dumps(legacy))
    (tmp_path / "plugged").write_text("FA:16:3E:A0:00:02 eth2\n\ngarbage\n")
    [iface] = store.definitions()
    assert (iface.name, iface.families, iface.mac, iface.is_sriov) == (
        "eth2",
        (4,),
        "fa:16:3e:a0:00:02",
        False,
    )


# -- nftables -------------------------------------------------------------------------------------------
def test_controller_rules_render_as_the_vip_chain() -> None:
    """The controller's rules (amp-a fixture) become one accept per rule behind the base chain."""
    rules = nftables.parse_rules((FIXTURES / "requests" / "interface-rules-amp-a.json").read_bytes())
    text = nftables.render_rules(rules)
    assert text.startswith("table inet amphora_table {}\ndelete table inet amphora_table\n")
    vip_chain = text.split("chain amphora_vip_chain {\n")[1].split("  }")[0]
    assert [line.strip() for line in vip_chain.splitlines()] == [
        "tcp dport 80 accept",
        "ip saddr 203.0.113.192/27 tcp dport 25 accept",
        "ip6 saddr 2001:db8:300::/48 tcp dport 25 accept",
        "tcp dport 443 accept",
        "tcp dport 8443 accept",
        "ip saddr 198.51.100.142/32 ip protocol 112 accept",
    ]
    assert 'iifname "eth1" goto amphora_vip_chain' in text
    assert "type filter hook input priority filter; policy drop;" in text


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ({"protocol": "UDP", "cidr": None, "port": 53}, "udp dport 53 accept"),
        ({"protocol": "SCTP", "cidr": "0.0.0.0/0", "port": 3868}, "sctp dport 3868 accept"),
        (
            {"protocol": "TCP", "cidr": "203.0.113.0/24", "port": 80.0},
            "ip saddr 203.0.113.0/24 tcp dport 80 accept",
        ),
        (
            {"protocol": "vrrp", "cidr": "2001:db8::2/128", "port": 112},
            "ip6 saddr 2001:db8::2/128 ip6 nexthdr 112 accept",
        ),
    ],
)
def test_one_rule(rule: dict[str, object], text: str) -> None:
    """Each protocol, with and without a source CIDR."""
    [parsed] = nftables.parse_rules(json.dumps([rule]).encode())
    assert parsed.render() == text


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"not json",
        b'[{"protocol": "ICMP", "cidr": null, "port": 1}]',
        b'[{"protocol": "TCP", "cidr": null, "port": 0}]',
        b'[{"protocol": "TCP", "cidr": null, "port": 70000}]',
        b'[{"protocol": "TCP", "cidr": null, "port": 80.5}]',
        b'[{"protocol": "TCP", "cidr": null, "port": true}]',
        b'[{"protocol": "TCP", "cidr": "nope", "port": 80}]',
        b'[{"protocol": "TCP", "cidr": 5, "port": 80}]',
        b'[{"protocol": "TCP", "port": 80}]',
        b'[{"protocol": "TCP", "cidr": null, "port": 80, "extra": 1}]',
    ],
)
def test_bad_rules_are_400(body: bytes) -> None:
    """Anything outside the controller's schema is ``Invalid rules information``."""
    with pytest.raises(BadBody, match="Invalid rules information"):
        nftables.parse_rules(body)


def test_base_set_drops_all_but_icmp_nd_and_dhcp() -> None:
    """The drop-all base set of an SR-IOV VIP replaces itself on every load."""
    text = nftables.render_base()
    assert "policy drop;" in text and "dport" not in text.replace("udp dport 68", "").replace(
        "udp dport 546", ""
    )
    assert text.count("delete table inet amphora_table") == 1


def test_masquerade_per_interface() -> None:
    """UDP/SCTP masquerade per served family; TCP notrack only for non-SR-IOV interfaces."""
    vip = Interface(name="eth1", if_type="vip", families=(4, 6), is_sriov=True)
    member = Interface(name="eth2", if_type="backend", families=(4,))
    text = nftables.render_masquerade([vip, member])
    ipv4 = text.split("table ip octavia-ipv4 {\n")[1]
    assert 'oifname "eth1" meta l4proto udp masquerade' in ipv4
    assert 'oifname "eth2" meta l4proto sctp masquerade' in ipv4
    assert 'iifname "eth2" meta l4proto tcp notrack' in ipv4
    assert 'iifname "eth1" meta l4proto tcp notrack' not in text
    assert 'oifname "eth2"' not in text.split("table ip6 octavia-ipv6 {\n")[1]


# -- announcements --------------------------------------------------------------------------------------
def test_gratuitous_arp_frame() -> None:
    """A broadcast ARP request with sender IP = target IP = the address and the NIC's MAC."""
    frame = announce.arp_frame("fa:16:3e:5a:00:01", "198.51.100.10")
    mac, ip = bytes.fromhex("fa163e5a0001"), bytes([198, 51, 100, 10])
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    assert struct.unpack("!HHBBH", frame[14:22]) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac and frame[28:32] == ip and frame[32:38] == b"\xff" * 6 and frame[38:42] == ip


def test_unsolicited_neighbour_advertisement() -> None:
    """Type 136 with R and O set, the target, and the target link-layer address option."""
    message = announce.na_message("fa:16:3e:5a:00:01", "2001:db8:101::10")
    assert struct.unpack("!BBHI", message[:8]) == (136, 0, 0, 0xA0000000)
    assert message[8:24] == bytes.fromhex("20010db8010100000000000000000010")
    assert message[24:] == b"\x02\x01" + bytes.fromhex("fa163e5a0001")

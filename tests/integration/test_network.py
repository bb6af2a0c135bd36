"""Plug VIP and member networks into real namespaces, with real haproxy, clients and members.

The amphora's hot-plugged ports are veth pairs created down with the controller's MACs inside the
amphora namespace; their far ends sit in a client namespace (the VIP network) and a member
namespace (the member network). Requests travel client -> VIP -> haproxy -> member and back.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.network import plans
from lab import namespaces
from tests.integration.helpers import SINGLE_HTTP_LB
from tests.integration.net_helpers import (
    IPV6_LB,
    JSON,
    Capture,
    addresses,
    answers,
    body,
    config,
    fetch,
    ip_json,
    ipv4_member_body,
    links,
    post,
    routes,
    source_rules,
    wait_listening,
)

pytestmark = pytest.mark.integration

VIP4, VIP6 = "198.51.100.140", "2001:db8:100::140"
VIP_MAC, MEMBER_MAC = "fa:16:3e:a0:00:01", "fa:16:3e:a0:00:02"
# the far end of the VIP port: both gateways, both host-route next hops, and a client behind each host route
CLIENT_SIDE = (
    "198.51.100.129/25",
    "198.51.100.254/25",
    "203.0.113.200/32",
    "2001:db8:100::1/64",
    "2001:db8:100::fe/64",
    "2001:db8:300::5/128",
)
MEMBERS = ("203.0.113.11", "203.0.113.12", "2001:db8:200::21", "2001:db8:200::22")
MEMBER_SIDE = (
    "203.0.113.1/25",
    "203.0.113.126/25",
    "2001:db8:200::1/64",
    *(f"{m}/{64 if ':' in m else 25}" for m in MEMBERS),
)


@pytest.fixture
def peers() -> Iterator[tuple[namespaces.Peer, namespaces.Peer]]:
    """A client namespace (VIP network) and a member namespace (member network)."""
    client, member = namespaces.Peer("client").create(), namespaces.Peer("member").create()
    try:
        yield client, member
    finally:
        client.destroy()
        member.destroy()


def plug_dual_stack_lb(
    amp: namespaces.Amphora, client: namespaces.Peer, member: namespaces.Peer, backends: namespaces.Backends
) -> None:
    """Plug the multi LB's VIP port (IPv4 VIP + IPv6 additional VIP) and the member port; start members."""
    amp.hotplug(VIP_MAC, client.name, CLIENT_SIDE)
    amp.hotplug(MEMBER_MAC, member.name, MEMBER_SIDE)
    for index, address in enumerate(MEMBERS):
        backends.start(address, 80, f"member-{index % 2 + 1}", netns=member.name)
    with amp.client() as api:
        plugged = api.post(
            f"/1.0/plug/vip/{VIP4}", content=body("plug-vip-active-standby-amp-a.json"), headers=JSON
        )
        assert plugged.status_code == 202, plugged.text
        assert plugged.json() == {
            "message": "OK",
            "details": f"VIPs plugged on interface eth1: {VIP4}, 2001:0db8:0100:0000:0000:0000:0000:0140",
        }
        member_plug = api.post("/1.0/plug/network", content=body("plug-network.json"), headers=JSON)
        assert member_plug.status_code == 202, member_plug.text
        assert member_plug.json() == {"message": "OK", "details": "Plugged on interface eth2"}
    for address in MEMBERS:
        wait_listening(member.name, address, 80)


def serve_both_families(amp: namespaces.Amphora, fixtures_dir: Path) -> None:
    """The controller's single-http and ipv6 load balancers, bound to the plugged VIPs, reloaded."""
    uploads = {
        SINGLE_HTTP_LB: config(fixtures_dir, "single-http.cfg", amp, ("198.51.100.10", VIP4)),
        IPV6_LB: config(fixtures_dir, "ipv6.cfg", amp, ("2001:db8:101::10", VIP6)),
    }
    with amp.client() as api:
        for lb_id, cfg in uploads.items():
            put = api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy", content=cfg)
            assert put.status_code == 202, put.text
            assert api.put(f"/1.0/loadbalancer/{lb_id}/reload").status_code == 202


def assert_traffic(client: namespaces.Peer) -> None:
    """IPv4 and IPv6 requests to the VIPs reach the members and come back (also from behind host routes).

    The ipv6 LB keeps each client on one member (SOURCE_IP persistence), the IPv4 one balances.
    """
    assert {fetch(client, VIP4) for _ in range(6)} == {b"member-1", b"member-2"}
    assert {fetch(client, VIP6) for _ in range(3)} <= {b"member-1", b"member-2"}
    assert fetch(client, VIP4, source="203.0.113.200") in {b"member-1", b"member-2"}
    assert fetch(client, VIP6, source="2001:db8:300::5") in {b"member-1", b"member-2"}


def assert_kernel_state(amp: namespaces.Amphora) -> None:
    """eth1/eth2 carry the MACs, MTUs, addresses, routes and rules of reference 7.4/7.5 (SINGLE)."""
    hx = amp.haproxy_ns
    nics = links(hx)
    assert (nics["eth1"]["address"], nics["eth1"]["mtu"]) == (VIP_MAC, 1450)
    assert (nics["eth2"]["address"], nics["eth2"]["mtu"]) == (MEMBER_MAC, 1500)
    assert addresses(hx, "eth1") == {"198.51.100.141/25", f"{VIP4}/32", f"{VIP6}/128"}
    assert addresses(hx, "eth2") == {"203.0.113.10/25", "2001:db8:200::10/64"}
    assert {
        ("default", "198.51.100.129", None),
        ("default", "2001:db8:100::1", None),
        ("203.0.113.192/27", "198.51.100.254", None),
        ("2001:db8:300::/48", "2001:db8:100::fe", None),
        ("2001:db8:100::/64", None, None),
        ("203.0.113.224/27", "203.0.113.126", None),  # the member subnet's host route (main table only)
    } <= routes(hx, "table", "main")
    assert routes(hx, "table", "1") == {
        ("default", "198.51.100.129", None),
        ("198.51.100.128/25", None, VIP4),
        ("203.0.113.192/27", "198.51.100.254", None),
        ("default", "2001:db8:100::1", None),
        ("2001:db8:100::/64", None, VIP6),
        ("2001:db8:300::/48", "2001:db8:100::fe", None),
    }
    assert source_rules(hx) == {(VIP4, "1"), (VIP6, "1")}  # the member plug did not touch them


def test_vip_and_member_network_carry_ipv4_and_ipv6(
    amphora: namespaces.Amphora,
    peers: tuple[namespaces.Peer, namespaces.Peer],
    backends: namespaces.Backends,
    fixtures_dir: Path,
) -> None:
    """Plug VIP + network, upload configs: both VIP families answer through the members, as specified."""
    client, member = peers
    capture = Capture(client)
    try:
        plug_dual_stack_lb(amphora, client, member, backends)
        assert {"198.51.100.141", VIP4, VIP6} <= capture.announced({"198.51.100.141", VIP4, VIP6})
    finally:
        capture.close()
    assert "eth1" not in links(amphora.name) and "eth0" in links(amphora.name)
    assert_kernel_state(amphora)
    serve_both_families(amphora, fixtures_dir)
    assert_traffic(client)
    with amphora.client() as api:
        assert api.get("/1.0/interface/198.51.100.141").json() == {"message": "OK", "interface": "eth1"}
        assert api.get("/1.0/interface/2001:0db8:0200:0000:0000:0000:0000:0010").json()["interface"] == "eth2"
        assert api.get(f"/1.0/interface/{amphora.mgmt_ip}").json()["interface"] == "eth0"
        missing = api.get("/1.0/interface/198.51.100.99")
        assert (missing.status_code, missing.json()) == (
            404,
            {"message": "Error interface not found for IP address"},
        )
        bad = api.get("/1.0/interface/notanip")
        assert (bad.status_code, bad.json()) == (400, {"message": "Invalid IP address"})


def test_simulated_reboot_brings_the_interfaces_and_traffic_back(
    amphora: namespaces.Amphora,
    peers: tuple[namespaces.Peer, namespaces.Peer],
    backends: namespaces.Backends,
    fixtures_dir: Path,
) -> None:
    """Namespace deleted, NICs back under kernel names, agent restarted: same interfaces, traffic again."""
    client, member = peers
    plug_dual_stack_lb(amphora, client, member, backends)
    serve_both_families(amphora, fixtures_dir)
    assert_traffic(client)
    stored = sorted(p.read_text() for p in (amphora.workdir / "interfaces").glob("*.json"))
    amphora.simulate_reboot()
    assert not Path(f"/run/netns/{amphora.haproxy_ns}").exists()
    assert {VIP_MAC, MEMBER_MAC} <= {link["address"] for link in links(amphora.name).values()}
    amphora.start_agent()
    assert namespaces.wait_until(lambda: answers(client, VIP4) and answers(client, VIP6), 15, 0.1)
    assert_kernel_state(amphora)
    assert_traffic(client)
    assert sorted(p.read_text() for p in (amphora.workdir / "interfaces").glob("*.json")) == stored


def test_plug_answers_errors_and_retries(
    amphora: namespaces.Amphora, peers: tuple[namespaces.Peer, namespaces.Peer]
) -> None:
    """Unknown MAC: exact 404 (and a PCI rescan); management NIC refused; retries: 409 / update; ethN."""
    client, member = peers
    rescan = amphora.workdir / "pci-rescan"
    rescan.write_text("")
    single = body("plug-vip-single-ipv4.json")
    with amphora.client() as api:
        unknown = api.post("/1.0/plug/vip/198.51.100.10", content=single, headers=JSON)
        assert (unknown.status_code, unknown.json()) == (
            404,
            {"details": "No suitable network interface found"},
        )
        assert rescan.read_text() == "1"
        unknown = api.post("/1.0/plug/network", content=ipv4_member_body(), headers=JSON)
        assert (unknown.status_code, unknown.json()) == (
            404,
            {"details": "No suitable network interface found"},
        )

        eth0_mac = links(amphora.name)["eth0"]["address"]
        mgmt = api.post(
            "/1.0/plug/vip/198.51.100.10", content=body("plug-vip-single-ipv4.json", mac_address=eth0_mac)
        )
        assert mgmt.status_code == 400
        assert mgmt.json()["message"] == "Refusing to plug the management interface"
        assert "management address" in mgmt.json()["details"]
        assert addresses(amphora.name, "eth0") == {f"{amphora.mgmt_ip}/64"}

        bad = api.post("/1.0/plug/vip/198.51.100.10", content=b"{}", headers=JSON)
        assert (bad.status_code, bad.json()["error"]) == (400, "400 Bad Request: Invalid subnet information")
        bad = api.post("/1.0/plug/vip/notanip", content=single, headers=JSON)
        assert bad.json() == {
            "message": "Invalid VIP: 'notanip' does not appear to be an IPv4 or IPv6 address"
        }

        amphora.hotplug("fa:16:3e:5a:00:01", client.name, ("198.51.100.1/26",))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the controller re-sends after a timeout
            codes = sorted(pool.map(lambda _: post(amphora, "/1.0/plug/vip/198.51.100.10", single), range(2)))
        assert codes == [202, 409]
        again = api.post("/1.0/plug/vip/198.51.100.10", content=single, headers=JSON)
        assert (again.status_code, again.json()) == (409, {"message": "Interface already exists"})

        amphora.hotplug(MEMBER_MAC, member.name, ("203.0.113.1/25",))
        amphora.hotplug("fa:16:3e:a0:00:03", member.name)
        broken = body("plug-network.json", mtu=1000)  # the kernel refuses IPv6 below an MTU of 1280
        failed = api.post("/1.0/plug/network", content=broken, headers=JSON)
        assert (failed.status_code, failed.json()["message"]) == (500, "Error plugging network")
        assert MEMBER_MAC in {link["address"] for link in links(amphora.name).values()}  # rolled back
        assert "eth2" not in links(amphora.haproxy_ns)
        replies = [
            api.post("/1.0/plug/network", content=ipv4_member_body(), headers=JSON).json()["details"],
            api.post("/1.0/plug/network", content=ipv4_member_body(), headers=JSON).json()["details"],
            api.post(
                "/1.0/plug/network", content=json.dumps({"mac_address": "fa:16:3e:a0:00:03", "fixed_ips": []})
            ).json()["details"],
        ]
    assert replies == [
        "Plugged on interface eth2",
        "Updated existing interface eth2",
        "Plugged on interface eth3",
    ]
    assert set(links(amphora.haproxy_ns)) == {"lo", "eth1", "eth2", "eth3"}
    assert (amphora.base / "plugged_interfaces").read_text() == (
        "fa:16:3e:5a:00:01 eth1\nfa:16:3e:a0:00:02 eth2\nfa:16:3e:a0:00:03 eth3\n"
    )
    stored = json.loads((amphora.workdir / "interfaces" / "eth1.json").read_text())
    expected = plans.vip_interface(plans.parse_plug_vip("198.51.100.10", single), "SINGLE")
    assert stored == expected.to_json()


@pytest.fixture
def active_standby(workdir: Path) -> Iterator[namespaces.Amphora]:
    """An agent configured for ACTIVE_STANDBY (keepalived owns the VIPs)."""
    amp = namespaces.Amphora(
        workdir, extra_config={"controller_worker": {"loadbalancer_topology": "ACTIVE_STANDBY"}}
    )
    amp.create()
    try:
        amp.start_agent()
        yield amp
    finally:
        amp.destroy()


def test_active_standby_plug_and_vrrp_port_replug(
    active_standby: namespaces.Amphora, peers: tuple[namespaces.Peer, namespaces.Peer]
) -> None:
    """A/S: only vrrp_ip is added, no source rules; a member subnet on the VRRP port updates eth1 in place."""
    client, _ = peers
    amp, hx = active_standby, active_standby.haproxy_ns
    amp.hotplug(VIP_MAC, client.name, ("198.51.100.129/25",))
    with amp.client() as api:
        plugged = api.post(
            f"/1.0/plug/vip/{VIP4}", content=body("plug-vip-active-standby-amp-a.json"), headers=JSON
        )
        assert plugged.status_code == 202, plugged.text
        assert addresses(hx, "eth1") == {"198.51.100.141/25"}
        assert source_rules(hx) == set()
        assert routes(hx, "table", "1") == {
            ("203.0.113.192/27", "198.51.100.254", None),
            ("2001:db8:300::/48", "2001:db8:100::fe", None),
        }
        assert api.get("/1.0/interface/198.51.100.141").json()["interface"] == "eth1"
        replug = api.post("/1.0/plug/network", content=body("plug-network-vip-net-info.json"), headers=JSON)
        assert replug.json() == {"message": "OK", "details": "Updated existing interface eth1"}
    assert addresses(hx, "eth1") == {"198.51.100.141/25", "198.51.100.70/26"}
    assert set(links(hx)) == {"lo", "eth1"}


def test_vip_firewall_rules(
    amphora: namespaces.Amphora,
    peers: tuple[namespaces.Peer, namespaces.Peer],
    backends: namespaces.Backends,
    fixtures_dir: Path,
) -> None:
    """SR-IOV VIP: drop-all until rules arrive; then allowed ports pass, the rest (and other sources) drop."""
    client, _ = peers
    amphora.hotplug(VIP_MAC, client.name, CLIENT_SIDE)
    with amphora.client() as api:
        sriov = body("plug-vip-active-standby-sriov-amp-a.json", additional_vips=[])
        assert api.post(f"/1.0/plug/vip/{VIP4}", content=sriov, headers=JSON).status_code == 202
        for port in (80, 25, 8080):
            backends.start(VIP4, port, f"vip-{port}", netns=amphora.haproxy_ns)
            wait_listening(amphora.haproxy_ns, VIP4, port)
        assert not answers(client, VIP4, 80)  # the base set drops everything but ICMP, ND and DHCP

        rules = (fixtures_dir / "requests" / "interface-rules-amp-a.json").read_bytes()
        put = api.put("/1.0/interface/198.51.100.141/rules", content=rules, headers=JSON)
        assert (put.status_code, put.json()) == (200, {"message": "OK"})
        assert namespaces.wait_until(lambda: answers(client, VIP4, 80), 5, 0.1)
        assert fetch(client, VIP4, 25, source="203.0.113.200") == b"vip-25"  # 203.0.113.192/27 may use 25
        assert not answers(client, VIP4, 25)  # ... 198.51.100.129 may not
        assert not answers(client, VIP4, 8080)  # no rule at all

        only_8080 = json.dumps([{"protocol": "TCP", "cidr": None, "port": 8080}]).encode()
        assert api.put("/1.0/interface/198.51.100.141/rules", content=only_8080).status_code == 200
        assert fetch(client, VIP4, 8080) == b"vip-8080"
        assert not answers(client, VIP4, 80)

        bad = api.put("/1.0/interface/198.51.100.141/rules", content=b'[{"protocol": "ICMP"}]')
        assert (bad.status_code, bad.json()["error"]) == (400, "400 Bad Request: Invalid rules information")
        nowhere = api.put("/1.0/interface/198.51.100.99/rules", content=only_8080)
        assert (nowhere.status_code, nowhere.json()) == (
            404,
            {"message": "Error interface not found for IP address"},
        )
    assert (amphora.base / "nftables-vip.rules").stat().st_mode & 0o777 == 0o600


def test_ipv6_only_vip(
    amphora: namespaces.Amphora, peers: tuple[namespaces.Peer, namespaces.Peer], backends: namespaces.Backends
) -> None:
    """The ipv6 LB's VIP port: vrrp_ip /64 and VIP /128 after DAD, IPv6 routes and rule, answers a client."""
    client, _ = peers
    hx, vip = amphora.haproxy_ns, "2001:db8:101::10"
    amphora.hotplug("fa:16:3e:5a:00:01", client.name, ("2001:db8:101::1/64",))
    with amphora.client() as api:
        plugged = api.post(f"/1.0/plug/vip/{vip}", content=body("plug-vip-ipv6.json"), headers=JSON)
        assert plugged.json() == {
            "message": "OK",
            "details": "VIPs plugged on interface eth1: 2001:0db8:0101:0000:0000:0000:0000:0010",
        }
        assert api.get("/1.0/interface/2001:db8:101:0::11").json()["interface"] == "eth1"
    assert addresses(hx, "eth1") == {"2001:db8:101::11/64", f"{vip}/128"}
    assert all("tentative" not in a.get("flags", []) for a in ip_json(hx, "addr", "show", "dev", "eth1"))
    assert routes(hx, "table", "1") == {
        ("default", "2001:db8:101::1", None),
        ("2001:db8:101::/64", None, vip),
    }
    assert source_rules(hx) == {(vip, "1")}
    backends.start(vip, 80, "vip6", netns=hx)
    wait_listening(hx, vip, 80)
    assert fetch(client, vip) == b"vip6"

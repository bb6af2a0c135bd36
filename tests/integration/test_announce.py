"""Gratuitous ARP and unsolicited NA after a start or reload in SINGLE; none in ACTIVE_STANDBY.

The amphora's VIP link (``eth1`` of its haproxy namespace) is a veth whose far end sits in a client
namespace, where every frame is captured: an ARP whose sender and target are the VIP, or a neighbour
advertisement for it, is an announcement (reference 4.6 step 6, 6.3.4 step 5, 7.7).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.keepalived.lvs import LvsListeners
from amphora_agent.keepalived.objects import build_keepalived
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LoadBalancers, LockTable
from amphora_agent.settings import LiveSettings, Settings, Topology
from lab import namespaces
from tests.integration.helpers import SINGLE_HTTP_LB, render
from tests.integration.net_helpers import Capture

pytestmark = pytest.mark.integration

VIP4, VIP6 = "198.51.100.10", "2001:db8:101::10"  # single-http.cfg's VIP, plus an IPv6 one
QUIET = 1.0  # how long to listen for announcements that must not come


@pytest.fixture
def client() -> Iterator[namespaces.Peer]:
    """The namespace at the far end of the VIP link."""
    peer = namespaces.Peer("client").create()
    try:
        yield peer
    finally:
        peer.destroy()


def wire_to(amp: namespaces.Amphora, client: namespaces.Peer) -> None:
    """Both VIPs on the amphora's eth1; its far end moved into ``client``."""
    tenant = amp.wire_tenant(vips=[f"{VIP4}/24", f"{VIP6}/64"], member_addresses=[])
    namespaces.sh("ip", "link", "set", tenant.link, "netns", client.name)
    client.sh("ip", "link", "set", tenant.link, "up")


def dual_stack_config(fixtures_dir: Path, amp: namespaces.Amphora) -> bytes:
    """single-http.cfg with a second bind line on the IPv6 VIP (and the loopback, never announced)."""
    text = render(fixtures_dir, "single-http.cfg", amp).decode()
    bind = f"    bind {VIP4}:80\n"
    assert bind in text
    extra = f"    bind {VIP6}:80\n    bind 127.0.0.1:8081\n    bind {VIP4}:81\n"
    return text.replace(bind, bind + extra).encode()


@pytest.mark.parametrize("topology", ["SINGLE", "ACTIVE_STANDBY"])
def test_reload_announces_the_vips_in_single_only(
    workdir: Path, client: namespaces.Peer, fixtures_dir: Path, topology: str
) -> None:
    """SINGLE: a reload sends a gratuitous ARP for the IPv4 VIP and an NA for the IPv6 one; A/S: none."""
    amp = namespaces.Amphora(workdir, extra_config={"controller_worker": {"loadbalancer_topology": topology}})
    amp.create()
    try:
        amp.start_agent()
        wire_to(amp, client)
        with amp.client() as api:
            put = api.put(
                f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy",
                content=dual_stack_config(fixtures_dir, amp),
            )
            assert put.status_code == 202, put.text
            assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/start").status_code == 202
            capture = Capture(client)
            try:
                reload = api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload")
                assert reload.json()["details"] == f"Listener {SINGLE_HTTP_LB} reloaded"
                if topology == "SINGLE":
                    assert capture.announced({VIP4, VIP6}) == {VIP4, VIP6}
                else:
                    assert capture.announced({VIP4, VIP6}, timeout=QUIET) == set()
            finally:
                capture.close()
    finally:
        amp.destroy()


def lvs_listeners(base: Path, namespace: str, topology: Topology) -> LvsListeners:
    """The agent's LVS service in this process, for the haproxy namespace ``namespace``."""
    settings = Settings(
        base_path=base,
        base_cert_dir=base / "certs",
        network_namespace=namespace,
        loadbalancer_topology=topology,
    )
    live = LiveSettings(settings)
    lbs = LoadBalancers(live, Layout.from_settings(settings), LockTable())
    return build_keepalived(live, lbs, lbs.locks).lvs


@pytest.mark.parametrize("topology", ["SINGLE", "ACTIVE_STANDBY"])
def test_lvs_vips_are_announced_in_single_only(
    tmp_path: Path, client: namespaces.Peer, fixtures_dir: Path, topology: Topology
) -> None:
    """Every VIP of an LVS config (both families) is announced in SINGLE, none in ACTIVE_STANDBY.

    Starting keepalived needs IPVS, so this drives the announcement step of a start or restart.
    """
    hx = namespaces.Peer("hx").create()
    link = f"a{os.getpid() % 100000}x{hx.index}"
    try:
        namespaces.sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth1", "netns", hx.name)
        namespaces.sh("ip", "link", "set", link, "netns", client.name)
        client.sh("ip", "link", "set", link, "up")
        for cidr in ("198.51.100.50/24", "2001:db8:101::50/64"):
            hx.sh("ip", "addr", "add", cidr, "dev", "eth1", "nodad")
        hx.sh("ip", "link", "set", "eth1", "up")
        lvs = lvs_listeners(tmp_path, hx.name, topology)
        listener = "156bcaaf-e533-4a60-bfb8-55794557f4ab"
        lvs.paths.lvs_dir.mkdir(parents=True)
        lvs.paths.lvs(listener).write_text((fixtures_dir / "lvs" / "udp-dualstack.conf").read_text())
        capture = Capture(client)
        try:
            lvs.announce_vips(listener)
            wanted = {"198.51.100.50", "2001:db8:101::50"}
            if topology == "SINGLE":
                assert capture.announced(wanted) == wanted
            else:
                assert capture.announced(wanted, timeout=QUIET) == set()
        finally:
            capture.close()
    finally:
        hx.destroy()

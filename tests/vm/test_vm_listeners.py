"""The controller's multi-listener load balancer in the real VM: HTTP, TCP and TERMINATED_HTTPS.

The certificates, the config and the reload go through the agent's API exactly as the controller
sends them (the VM runs the agent with its default paths, so nothing is substituted). Clients sit
in the client namespace on the VIP network, members in the member namespace on the member network:
every request crosses both hot-plugged NICs. haproxy's flow-log lines go through rsyslog to the
tenant target of ``10-rsyslog.conf``.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import namespaces, tenant
from lab.amphora_vm import AMPHORA_ID, Amphora
from tests.integration.helpers import get
from tests.integration.test_multi_listener import tls_get
from tests.vm.conftest import Ports

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
LB = "1255f924-18da-44a0-aad7-23512f2c0594"
PROJECT = "e68cffd4fce3496e56872defff73b60a"
LISTENERS = {
    "6ecbef6c-ef23-4cbb-ab12-ca7118390d04": "HTTP",
    "a89fb3d1-d706-4431-a506-5696d13e932a": "TCP",
    "c776a781-ebd5-44e2-b8e4-5ceee6f15a1a": "TERMINATED_HTTPS",
    "d20edd98-8c63-4330-a3b7-015d85b2f868": "TCP",
}
HTTP_LISTENER = "6ecbef6c-ef23-4cbb-ab12-ca7118390d04"
CLIENT_IP = tenant.CLIENT_ADDRESSES[0].split("/")[0]


def wait_listening(peer: namespaces.Peer, address: str, port: int) -> None:
    """Until a member started in ``peer`` accepts connections."""

    def accepts() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((address, port)) == 0

    assert namespaces.wait_until(lambda: peer.call(accepts), 20, interval=0.2), f"{address}:{port}"


@pytest.fixture(scope="module")
def multi_lb(
    amphora: Amphora, ports: Ports, tenant_net: tenant.TenantNetworks, fixtures_dir: Path
) -> Iterator[dict[str, str]]:
    """Members up, then certificates, config and reload as the controller sends them; listener types."""
    members = namespaces.Backends()
    member_ns = tenant_net.member
    try:
        for n in (21, 22):
            members.start(f"203.0.113.{n}", 8080, f"web-{n}", netns=member_ns.name)
        for n in (41, 42):
            pem = fixtures_dir / "certs-extra" / "backend-server.pem"
            members.start(f"203.0.113.{n}", 8443, f"secure-{n}", netns=member_ns.name, tls_pem=pem)
        for n, port in ((21, 8080), (22, 8080), (41, 8443), (42, 8443)):
            wait_listening(member_ns, f"203.0.113.{n}", port)
        with amphora.controller.client(amphora.address) as api:
            for pem in sorted((fixtures_dir / "certs" / LB).iterdir()):
                url = f"/1.0/loadbalancer/{LB}/certificates/{pem.name}"
                assert api.request("GET", url).status_code == 404  # the controller's md5 check first
                assert api.request("PUT", url, content=pem.read_bytes()).status_code == 200
                assert api.certificate_md5(LB, pem.name) == hashlib.md5(pem.read_bytes()).hexdigest()
            config = (fixtures_dir / "haproxy" / "multi-listener.cfg").read_bytes()
            put = api.request("PUT", f"/1.0/loadbalancer/{AMPHORA_ID}/{LB}/haproxy", content=config)
            assert put.status_code == 202, put.text
            reload = api.request("PUT", f"/1.0/loadbalancer/{LB}/reload")
            assert reload.status_code == 202, reload.text
            types = {row.uuid: row.type for row in api.listeners() if row.status == "ACTIVE"}
        yield types
    finally:
        members.stop()


def test_every_listener_is_active(multi_lb: dict[str, str]) -> None:
    """``GET /1.0/listeners`` lists the four haproxy listeners ACTIVE with their types."""
    assert {k: v for k, v in multi_lb.items() if k in LISTENERS} == LISTENERS


def test_http_through_the_vip_reaches_both_members(
    multi_lb: dict[str, str], tenant_net: tenant.TenantNetworks
) -> None:
    """HTTP to the VIP (IPv4 and IPv6) from the client namespace: weighted round robin over both."""
    client = tenant_net.client
    assert namespaces.wait_until(lambda: client.call(lambda: get(tenant.VIP))[0] == 200, 30, interval=0.5)
    answers = client.call(lambda: [get(tenant.VIP) for _ in range(9)])
    assert {status for status, _ in answers} == {200}
    assert {body for _, body in answers} == {b"web-21", b"web-22"}  # weights 10 and 5
    assert client.call(lambda: get(tenant.VIP6))[1] in (b"web-21", b"web-22")


def test_terminated_https_with_sni_and_an_l7_policy(
    multi_lb: dict[str, str], tenant_net: tenant.TenantNetworks, fixtures_dir: Path
) -> None:
    """TLS ends on the amphora with the SNI certificate asked for; the pool re-encrypts to its members."""
    root = fixtures_dir / "certs-extra" / "root-ca.pem"
    client = tenant_net.client
    assert namespaces.wait_until(
        lambda: client.call(lambda: tls_get(tenant.VIP, "www.example.com", root))[0] == 200, 30, interval=0.5
    )
    status, body, name = client.call(lambda: tls_get(tenant.VIP, "www.example.com", root))
    assert (status, name) == (200, "www.example.com") and body.startswith(b"secure-4")
    assert client.call(lambda: tls_get(tenant.VIP, "api.example.com", root))[2] == "api.example.com"
    assert client.call(lambda: tls_get(tenant.VIP, "www.example.com", root, "/static/x"))[1].startswith(
        b"web-"
    )


def test_tcp_listener_sends_the_proxy_protocol(
    multi_lb: dict[str, str], tenant_net: tenant.TenantNetworks
) -> None:
    """TCP:25 reaches the PROXY-protocol member with the client's address and the VIP."""

    def first_line() -> bytes:
        with socket.create_connection((tenant.VIP, 25), timeout=3) as tcp:
            tcp.settimeout(3)
            return tcp.recv(200)

    with namespaces.proxy_protocol_member("203.0.113.31", 2525, tenant_net.member) as seen:
        assert namespaces.wait_until(
            lambda: tenant_net.client.call(first_line).startswith(b"PROXY TCP4"), 30, interval=0.5
        )
    assert seen[-1].startswith(f"PROXY TCP4 {CLIENT_IP} {tenant.VIP} ".encode())


def test_tenant_flow_logs_reach_the_tenant_target(
    amphora: Amphora, multi_lb: dict[str, str], tenant_net: tenant.TenantNetworks
) -> None:
    """haproxy's log line of each request (local0 info) arrives at the tenant target, in the log format."""
    controller = amphora.controller
    controller.drain("tenant")
    marker = "/flow-log-probe"
    tenant_net.client.call(lambda: get(tenant.VIP, path=marker))
    lines = controller.receive("tenant", timeout=30, until=marker.encode())
    line = next((x.decode() for x in lines if marker.encode() in x), "")
    assert line.startswith("<134>"), lines[-3:]  # local0.info
    fields = line.split("haproxy[", 1)[-1].split("]: ", 1)[-1].split()
    assert fields[:4] == [PROJECT, LB, HTTP_LISTENER, CLIENT_IP]
    assert f'"GET {marker} HTTP/1.1" 200' in line

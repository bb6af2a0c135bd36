"""The controller's multi-listener load balancer (HTTP, TCP, TERMINATED_HTTPS, HTTPS) end to end."""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
from pathlib import Path

import pytest

from lab import namespaces
from tests.integration.helpers import get, render

pytestmark = pytest.mark.integration

LB = "1255f924-18da-44a0-aad7-23512f2c0594"
VIP4, VIP6 = "198.51.100.140", "2001:db8:100::140"
LISTENERS = {
    "6ecbef6c-ef23-4cbb-ab12-ca7118390d04": "HTTP",
    "a89fb3d1-d706-4431-a506-5696d13e932a": "TCP",
    "c776a781-ebd5-44e2-b8e4-5ceee6f15a1a": "TERMINATED_HTTPS",
    "d20edd98-8c63-4330-a3b7-015d85b2f868": "TCP",
}


def tls_get(host: str, sni: str, ca: Path, path: str = "/") -> tuple[int, bytes, str]:
    """GET over TLS verified with the fixtures' root CA; returns status, body and the cert's CN."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, 443), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        subject = (tls.getpeercert() or {}).get("subject", ())
        names = [str(pair[1]) for rdn in subject for pair in rdn if pair[0] == "commonName"]
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, response.read(), names[0]


def test_every_listener_of_the_multi_listener_lb(
    amphora: namespaces.Amphora,
    backends: namespaces.Backends,
    fixtures_dir: Path,
) -> None:
    """Certificates, then the config, then reload: HTTP (v4+v6), TLS with SNI and TCP all serve."""
    amphora.wire_tenant(
        vips=[f"{VIP4}/24", f"{VIP6}/64"],
        member_addresses=[
            "198.51.100.1/24",
            "2001:db8:100::1/64",
            *(f"203.0.113.{n}/24" for n in (21, 22, 31, 41, 42)),
        ],
        haproxy_side=["203.0.113.2/24"],
    )
    for n in (21, 22):
        backends.start(f"203.0.113.{n}", 8080, f"web-{n}")
    for n in (41, 42):
        backends.start(
            f"203.0.113.{n}", 8443, f"secure-{n}", tls_pem=fixtures_dir / "certs-extra" / "backend-server.pem"
        )
    certs = fixtures_dir / "certs" / LB
    with amphora.client() as api:
        for pem in sorted(certs.iterdir()):
            body = pem.read_bytes().replace(b"/var/lib/octavia/certs", str(amphora.base / "certs").encode())
            url = f"/1.0/loadbalancer/{LB}/certificates/{pem.name}"
            assert api.get(url).status_code == 404
            assert api.put(url, content=body).status_code == 200
            assert api.get(url).json()["md5sum"] == hashlib.md5(body).hexdigest()
        put = api.put(
            f"/1.0/loadbalancer/{amphora.amphora_id}/{LB}/haproxy",
            content=render(fixtures_dir, "multi-listener.cfg", amphora),
        )
        assert put.status_code == 202, put.text
        assert api.put(f"/1.0/loadbalancer/{LB}/reload").status_code == 202
        rows = api.get("/1.0/listeners").json()
        assert {r["uuid"]: r["type"] for r in rows} == LISTENERS
        assert {r["status"] for r in rows} == {"ACTIVE"}
        assert sorted(api.get("/1.0/details").json()["listeners"]) == sorted(LISTENERS)

    assert namespaces.wait_until(lambda: get(VIP4)[0] == 200, 10)
    assert {get(VIP4)[1] for _ in range(6)} == {b"web-21", b"web-22"}
    assert get(VIP6)[1] in (b"web-21", b"web-22")

    root = fixtures_dir / "certs-extra" / "root-ca.pem"
    assert namespaces.wait_until(lambda: tls_get(VIP4, "www.example.com", root)[0] == 200, 15)
    status, body, name = tls_get(VIP4, "www.example.com", root)
    assert (status, name) == (200, "www.example.com") and body.startswith(b"secure-")
    assert tls_get(VIP4, "api.example.com", root)[2] == "api.example.com"
    assert tls_get(VIP4, "www.example.com", root, "/static/x")[1].startswith(b"web-")

    with namespaces.proxy_protocol_member("203.0.113.31", 2525) as seen:
        assert namespaces.wait_until(lambda: tcp_line().startswith(b"PROXY TCP4 198.51.100.1 "), 10)
    assert seen[0].startswith(b"PROXY TCP4 198.51.100.1 198.51.100.140 ")


def tcp_line() -> bytes:
    """What the TCP listener's member sends back on a new connection."""
    with socket.create_connection((VIP4, 25), timeout=2) as tcp:
        tcp.settimeout(2)
        return tcp.recv(200)

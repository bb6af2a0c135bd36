"""A real agent's answers, successes and errors, validated against docs/openapi.yaml.

Every documented operation is called at least once (in the order the controller would); each answer's
status must be documented for it, and its body and ETag must match the document's schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import namespaces
from lab.vrrp import keepalived_config
from tests import openapi_support
from tests.integration.helpers import SINGLE_HTTP_LB, render

pytestmark = pytest.mark.integration

UNKNOWN = "0000dead-0000-4000-8000-000000000000"
LVS_LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"
ETH1_IP = "198.51.100.141"


@dataclass
class Checker:
    """Sends requests to the agent and validates every answer; remembers what was covered."""

    amp: namespaces.Amphora
    api: httpx.Client
    covered: set[tuple[str, str, int]] = field(default_factory=set)

    def __call__(
        self, method: str, path: str, status: int, *, content: bytes | None = None, body: Any = None
    ) -> httpx.Response:
        """One request: it must answer ``status``, as the document says."""
        response = self.api.request(method, path, content=content, json=body)
        assert response.status_code == status, (method, path, response.status_code, response.text[:500])
        template, _ = openapi_support.check_response(
            method, response.url.path, status, response.headers, response.content
        )
        self.covered.add((method, openapi_support.normalize(template), status))
        return response


@pytest.fixture
def check(amphora: namespaces.Amphora) -> Iterator[Checker]:
    """A running agent whose haproxy namespace has an eth1 with the VIP and a VRRP address."""
    amphora.wire_tenant(vips=["198.51.100.10/24"], member_addresses=[], haproxy_side=[f"{ETH1_IP}/24"])
    with amphora.client() as api:
        yield Checker(amphora, api)


def test_every_operation_answers_as_documented(check: Checker, fixtures_dir: Path) -> None:
    """The controller's flows and their error cases: each answer is a documented status and shape."""
    amp, lb = check.amp, f"/1.0/loadbalancer/{SINGLE_HTTP_LB}"
    # discovery (GET // as the controller sends it: the URL is given whole so the slashes stay)
    check("GET", "/", 200)
    check("GET", amp.url + "//", 200)
    for path in ("/info", "/1.0/info", "/1.0/details", "/1.0/listeners", "/1.0/openapi.yaml"):
        check("GET", path, 200)
    # an haproxy load balancer
    config = render(fixtures_dir, "single-http.cfg", amp)
    put_config = f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy"
    check("PUT", put_config, 400, content=b"global\n    BAD_LINE\n")
    check("PUT", f"/1.0/loadbalancer/{amp.amphora_id}/not_an-id/haproxy", 400, content=config)
    check("PUT", put_config, 202, content=config)
    check("GET", f"{lb}/haproxy", 200)
    check("GET", f"/1.0/loadbalancer/{UNKNOWN}/haproxy", 404)
    check("PUT", f"{lb}/bad_test_data", 400)
    check("PUT", f"/1.0/loadbalancer/{UNKNOWN}/start", 404)
    for action in ("reload", "start", "reload", "stop", "start"):
        check("PUT", f"{lb}/{action}", 202)
    assert check("GET", "/1.0/listeners", 200).json()[0]["status"] == "ACTIVE"
    # tenant certificates
    pem = amp.ca.issue("www.example.com", server=True).bundle
    check("GET", f"{lb}/certificates/www.example.com.pem", 404)
    check("PUT", f"{lb}/certificates/www.example.com.pem", 200, content=pem)
    check("PUT", f"{lb}/certificates/bad.pem", 400, content=b"-----BEGIN CERTIFICATE-----\nx\n")
    check("PUT", f"{lb}/certificates/.pem", 400, content=pem)
    check("GET", f"{lb}/certificates/www.example.com.pem", 200)
    check("GET", f"{lb}/certificates/.pem", 400)
    check("DELETE", f"{lb}/certificates/www.example.com.pem", 200)
    check("DELETE", f"{lb}/certificates/.pem", 400)
    # the agent's own certificate and configuration
    check("PUT", "/1.0/certificate", 400, content=b"junk")
    check("PUT", "/1.0/certificate", 202, content=amp.ca.issue(amp.amphora_id, server=True).bundle)
    check("PUT", "/1.0/config", 202, content=amp.config_file.read_bytes())
    check("PUT", "/1.0/config", 400, content=b"[controller_worker]\nloadbalancer_topology = ACTIVE\n")
    # network
    plug = json.loads((fixtures_dir / "requests" / "plug-vip-single-ipv4.json").read_text())
    check("POST", "/1.0/plug/vip/198.51.100.20", 404, body={**plug, "mac_address": "fa:16:3e:ff:ff:ff"})
    check("POST", "/1.0/plug/vip/not-an-ip", 400, body=plug)
    check("POST", "/1.0/plug/network", 400, body={"fixed_ips": []})
    check("POST", "/1.0/plug/network", 404, body={"mac_address": "fa:16:3e:ff:ff:fe"})
    check("GET", f"/1.0/interface/{ETH1_IP}", 200)
    check("GET", "/1.0/interface/203.0.113.99", 404)
    check("GET", "/1.0/interface/not-an-ip", 400)
    rules = json.loads((fixtures_dir / "requests" / "interface-rules-amp-a.json").read_text())
    check("PUT", f"/1.0/interface/{ETH1_IP}/rules", 200, body=rules)
    check("PUT", f"/1.0/interface/{ETH1_IP}/rules", 400, body=[{"protocol": "ICMP"}])
    check("PUT", "/1.0/interface/203.0.113.99/rules", 404, body=rules)
    # LVS listener and VRRP
    lvs = (fixtures_dir / "lvs" / "udp-listener.conf").read_text()
    lvs = lvs.replace("/var/lib/octavia", str(amp.base))
    check("GET", f"/1.0/listeners/{LVS_LISTENER}/udp_listener", 404)
    check("PUT", f"/1.0/listeners/{amp.amphora_id}/{LVS_LISTENER}/udp_listener", 200, content=lvs.encode())
    check("GET", f"/1.0/listeners/{LVS_LISTENER}/udp_listener", 200)
    check("DELETE", f"/1.0/listeners/{LVS_LISTENER}", 200)
    check("PUT", "/1.0/vrrp/upload", 200, content=keepalived_config(fixtures_dir, 0, amp.base))
    check("PUT", "/1.0/vrrp/bad_test_data", 400)
    check("PUT", "/1.0/vrrp/start", 202)
    check("PUT", "/1.0/vrrp/stop", 202)
    # deleting, twice: the second one is a no-op
    check("DELETE", f"/1.0/listeners/{SINGLE_HTTP_LB}", 200)
    check("DELETE", f"/1.0/listeners/{SINGLE_HTTP_LB}", 200)
    check("DELETE", "/1.0/listeners/not_an-id", 400)

    called = {(method, path) for method, path, _ in check.covered}
    assert called == set(openapi_support.documented()) - openapi_support.PENDING, (
        "every served operation was called"
    )


ROUTER_ERRORS = [
    ("GET", "/1.0/nothing-here", 404),
    ("GET", "/1.0/info/", 404),
    ("POST", "/1.0/info", 405),
    ("GET", "/1.0/loadbalancer/x/start", 405),
    ("GET", f"/1.0/listeners/{UNKNOWN}", 405),
]


def test_router_errors_are_json_errors(amphora: namespaces.Amphora) -> None:
    """No route or a wrong method: a JSON 404/405 in the document's Error shape (never retried HTML)."""
    with amphora.client() as api:
        for method, path, status in ROUTER_ERRORS:
            response = api.request(method, path)
            assert response.status_code == status, (method, path)
            openapi_support.check_router_error(status, response.headers, response.content)

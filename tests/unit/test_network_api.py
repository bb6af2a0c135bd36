"""The network routes' HTTP shapes, over a fake network service (no kernel): status codes and bodies."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from amphora_agent.api import create_app
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.errors import Conflict, InvalidInput, NotFound
from amphora_agent.layout import Layout
from amphora_agent.network import plans
from amphora_agent.network.service import Networking, NoInterface, management_addresses
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.system import files
from amphora_agent.wiring import wire
from tests.conftest import FIXTURES

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what this project installs
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SINGLE = (FIXTURES / "requests" / "plug-vip-single-ipv4.json").read_bytes()


class FakeNetworking(Networking):
    """Answers from a script instead of the kernel; parses bodies like the real service."""

    def __init__(self, tmp: Path, outcome: Exception | str) -> None:
        settings = Settings(base_path=tmp, base_cert_dir=tmp / "certs", agent_server_network_dir=tmp / "if")
        super().__init__(LiveSettings(settings), Layout.from_settings(settings))
        self.folder, self.settings = tmp, settings
        self.outcome = outcome
        self.reached: list[str | None] = []

    def _answer(self) -> str:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def plug_vip(self, vip: str, body: bytes, reached_on: str | None = None) -> str:
        """Parse, then answer from the script."""
        plans.parse_plug_vip(vip, body)
        self.reached.append(reached_on)
        return self._answer()

    def plug_network(self, body: bytes, reached_on: str | None = None) -> str:
        """Parse, then answer from the script."""
        plans.parse_plug_network(body)
        return self._answer()

    def interface_of(self, ip: str, anywhere: bool = True) -> str:
        """Answer from the script."""
        return self._answer()

    def set_rules(self, ip: str, body: bytes) -> None:
        """Parse the rules, then answer from the script."""
        from amphora_agent.network import nftables

        nftables.parse_rules(body)
        self._answer()


def client(net: FakeNetworking) -> TestClient:
    """The daemon's app (``wire``) over ``net``'s folder, with its network service replaced by ``net``."""
    ca = CertificateAuthority()
    files.atomic_write(net.folder / "ca.pem", ca.cert_pem, files.PUBLIC)
    files.atomic_write(net.folder / "server.pem", ca.issue("amphora", server=True).bundle)
    settings = dataclasses.replace(
        net.settings, agent_server_cert=net.folder / "server.pem", agent_server_ca=net.folder / "ca.pem"
    )
    services = dataclasses.replace(wire(settings).services, network=net)
    return TestClient(create_app(services))


@pytest.mark.parametrize(
    ("outcome", "status", "body"),
    [
        (
            "VIPs plugged on interface eth1: 198.51.100.10",
            202,
            {"message": "OK", "details": "VIPs plugged on interface eth1: 198.51.100.10"},
        ),
        (NoInterface(), 404, {"details": "No suitable network interface found"}),
        (Conflict("Interface already exists"), 409, {"message": "Interface already exists"}),
        (
            InvalidInput("Refusing to plug the management interface", "eth0 (fa:16:3e:00:00:09): ..."),
            400,
            {
                "message": "Refusing to plug the management interface",
                "details": "eth0 (fa:16:3e:00:00:09): ...",
            },
        ),
    ],
)
def test_plug_vip_answers(
    tmp_path: Path, outcome: Exception | str, status: int, body: dict[str, str]
) -> None:
    """Each outcome of a VIP plug has the existing agent's status and exact body."""
    with client(FakeNetworking(tmp_path, outcome)) as api:
        reply = api.post("/1.0/plug/vip/198.51.100.10", content=SINGLE)
    assert (reply.status_code, reply.json()) == (status, body)
    assert reply.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "path", "content", "text"),
    [
        ("POST", "/1.0/plug/vip/198.51.100.10", b"[]", "Invalid subnet information"),
        ("POST", "/1.0/plug/network", b"{}", "Invalid port information"),
        ("PUT", "/1.0/interface/198.51.100.11/rules", b'[{"protocol": "ICMP"}]', "Invalid rules information"),
        # nested past the JSON parser's recursion limit: a 400, not a crash
        ("POST", "/1.0/plug/vip/198.51.100.10", b"[" * 200_000, "Invalid subnet information"),
        ("POST", "/1.0/plug/network", b'{"a":' * 100_000, "Invalid port information"),
        ("PUT", "/1.0/interface/198.51.100.11/rules", b"[" * 200_000, "Invalid rules information"),
    ],
)
def test_framework_style_400s(tmp_path: Path, method: str, path: str, content: bytes, text: str) -> None:
    """Malformed bodies get the existing agent's framework-style 400 (``error`` and ``http_code``)."""
    with client(FakeNetworking(tmp_path, "unused")) as api:
        reply = api.request(method, path, content=content)
    assert reply.status_code == 400
    assert reply.json()["error"] == f"400 Bad Request: {text}"
    assert reply.json()["http_code"] == 400


def test_interface_lookup_and_rules_answers(tmp_path: Path) -> None:
    """200 with the interface name; rules answer 200 OK; a lookup miss is a 404 with only ``message``."""
    with client(FakeNetworking(tmp_path, "eth1")) as api:
        assert api.get("/1.0/interface/198.51.100.11").json() == {"message": "OK", "interface": "eth1"}
        rules = api.put("/1.0/interface/198.51.100.11/rules", content=b"[]")
        assert (rules.status_code, rules.json()) == (200, {"message": "OK"})
    with client(FakeNetworking(tmp_path, NotFound("Error interface not found for IP address"))) as api:
        missing = api.get("/1.0/interface/198.51.100.99")
    assert (missing.status_code, missing.json()) == (
        404,
        {"message": "Error interface not found for IP address"},
    )


def test_the_request_local_address_is_passed_on(tmp_path: Path) -> None:
    """The plug learns the address the request arrived on (the management address to protect)."""
    fake = FakeNetworking(tmp_path, "ok")
    with client(fake) as api:
        api.post("/1.0/plug/vip/198.51.100.10", content=SINGLE)
    assert fake.reached and fake.reached[0]


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (("2001:db8:f00:1::2", "::"), {"2001:db8:f00:1::2"}),
        (("::ffff:203.0.113.140", "::"), {"203.0.113.140"}),
        (("fe80::1%eth0", "0.0.0.0"), {"fe80::1"}),
        ((None, "203.0.113.140"), {"203.0.113.140"}),
        (("testclient", "::"), set()),
    ],
)
def test_management_addresses(candidates: tuple[str | None, ...], expected: set[str]) -> None:
    """Specific addresses only, IPv4-mapped ones unwrapped, scope ids dropped."""
    assert management_addresses(*candidates) == expected

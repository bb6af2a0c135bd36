"""Every amphoractl command against a real agent in an amphora namespace: output and exit code.

One agent serves the whole module (commands run in file order where they build on each other): its
VIP port is plugged with ``amphoractl plug vip``, haproxy then serves on that VIP, keepalived runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from amphora_agent.ctl.app import app
from amphora_agent.devcerts import CertificateAuthority
from lab import namespaces
from lab.vrrp import keepalived_config
from tests.integration.helpers import SINGLE_HTTP_LB, render

pytestmark = pytest.mark.integration

LISTENER = "922d8f42-59a5-4a50-b10d-9632277e363e"  # single-http.cfg's frontend
VIP, VIP_SUBNET, VRRP_IP = "198.51.100.10", "198.51.100.0/24", "198.51.100.11"
VIP_MAC, MEMBER_MAC = "fa:16:3e:5a:00:01", "fa:16:3e:a0:00:02"
KEY = "cli-heartbeat-key"
AMPHORACTL = str(Path(sys.executable).with_name("amphoractl"))


def free_udp_port() -> int:
    """A UDP port nothing listens on here."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


class Ctl:
    """Runs amphoractl in-process with the amphora's connection settings in the environment."""

    def __init__(self, amp: namespaces.Amphora, folder: Path, heartbeat_port: int) -> None:
        self.amp = amp
        self.folder = folder
        self.heartbeat_port = heartbeat_port
        self.env = {
            "AMPHORA_URL": amp.url,
            "AMPHORA_ID": amp.amphora_id,
            "AMPHORA_CA": str(amp.certs / "client_ca.pem"),
            "AMPHORA_CLIENT_CERT": str(amp.certs / "client.pem"),
            "AMPHORA_RETRIES": "2",
            "AMPHORA_RETRY_INTERVAL": "0.2",
            "COLUMNS": "200",
        }
        self.runner = CliRunner()

    def __call__(self, *args: str, input: bytes | None = None) -> Result:
        """Run one command; a crash (not a clean exit) fails the test."""
        result = self.runner.invoke(app, list(args), env=self.env, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args: str) -> str:
        """Run a command that must succeed; its stdout."""
        result = self(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def fails(self, code: int, *args: str) -> str:
        """Run a command that must fail with ``code``; its stderr (stdout stays empty)."""
        result = self(*args)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        return result.stderr

    def file(self, name: str, data: bytes | str) -> str:
        """Write an input file; its path."""
        path = self.folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)


@pytest.fixture(scope="module")
def ctl() -> Iterator[Ctl]:
    """A running agent (heartbeats every second to a port here) and amphoractl set up for it."""
    with tempfile.TemporaryDirectory(prefix="amp") as path:
        folder = Path(path)
        amp = namespaces.Amphora(folder / "amp")
        port = free_udp_port()
        amp.extra_config = {
            "health_manager": {
                "controller_ip_port_list": f"[2001:db8:f00:{amp.index:x}::1]:{port}",
                "heartbeat_interval": "1",
                "heartbeat_key": KEY,
            }
        }
        try:
            amp.create()
            amp.start_agent()
            (folder / "in").mkdir()
            yield Ctl(amp, folder / "in", port)
        finally:
            amp.destroy()


@pytest.fixture(scope="module")
def vip(ctl: Ctl) -> Result:
    """``plug vip`` of a freshly hot-plugged NIC (the VIP port), as the controller would."""
    ctl.amp.hotplug(VIP_MAC, peer_addresses=("198.51.100.1/24",))
    args = ["plug", "vip", VIP, "--subnet-cidr", VIP_SUBNET, "--gateway", "198.51.100.1"]
    return ctl(*args, "--mac", VIP_MAC, "--vrrp-ip", VRRP_IP, "--mtu", "1500")


# -- versions and discovery --------------------------------------------------------------------
def test_version_of_both_commands(ctl: Ctl) -> None:
    """``--version`` of amphoractl and amphora-agent, and /info's agent_version, are the package's."""
    expected = version("amphora-agent")
    for command, name in ((AMPHORACTL, "amphoractl"), (str(Path(AMPHORACTL).with_name("amphora-agent")), "")):
        done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0
        assert done.stdout.strip() == f"{name or 'amphora-agent'} {expected}"
    assert json.loads(ctl.ok("--json", "info"))["agent_version"] == expected


def test_console_script_reads_the_environment(ctl: Ctl) -> None:
    """The installed ``amphoractl`` takes its connection from AMPHORA_* variables alone."""
    env = {**os.environ, **ctl.env}
    done = subprocess.run(
        [AMPHORACTL, "info"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert ctl.amp.amphora_id in done.stdout and "haproxy_version" in done.stdout


def test_info(ctl: Ctl) -> None:
    """A table by default; --json (before or after the command) gives the agent's body."""
    table = ctl.ok("info")
    assert "amphora info" in table and ctl.amp.amphora_id in table and "api_version" in table
    for args in (("--json", "info"), ("info", "--json")):
        body = json.loads(ctl.ok(*args))
        assert body["uuid"] == ctl.amp.amphora_id and body["api_version"] == "1.0"


def test_details(ctl: Ctl) -> None:
    """Nested figures are expanded in the table; JSON has what the controller reads."""
    table = ctl.ok("details")
    assert "memory.free" in table and "cpu_count" in table
    body = json.loads(ctl.ok("details", "--json"))
    assert {"cpu_count", "active_tuned_profiles", "memory", "listeners"} <= set(body)


def test_api_version_and_openapi(ctl: Ctl) -> None:
    """GET / through the CLI; the served OpenAPI document is docs/openapi.yaml."""
    assert ctl.ok("api-version") == "1.0\n"
    assert json.loads(ctl.ok("api-version", "--json")) == {"api_version": "1.0"}
    docs = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
    assert ctl.ok("openapi") == docs.read_text()


# -- network -----------------------------------------------------------------------------------
def test_plug_vip(ctl: Ctl, vip: Result) -> None:
    """The hot-plugged NIC becomes eth1 with the VIP; a second plug of the same MAC is a conflict."""
    assert vip.exit_code == 0, vip.stderr
    assert vip.stdout == f"OK (202)\nVIPs plugged on interface eth1: {VIP}\n"
    args = ["plug", "vip", VIP, "--subnet-cidr", VIP_SUBNET, "--mac", VIP_MAC]
    assert "Error 409: Interface already exists" in ctl.fails(1, *args)


def test_plug_vip_needs_subnet_and_mac(ctl: Ctl) -> None:
    """Missing body keys are a usage error before any request."""
    assert "missing subnet_cidr and mac_address" in ctl.fails(2, "plug", "vip", VIP)


def test_plug_vip_of_an_absent_nic_is_retried_then_reported(ctl: Ctl, fixtures_dir: Path) -> None:
    """No NIC with that MAC: the hot-plug 404 is retried (AMPHORA_RETRIES), then printed; --body works."""
    body = str(fixtures_dir / "requests" / "plug-vip-single-ipv4.json")
    err = ctl.fails(1, "plug", "vip", "198.51.100.20", "--body", body, "--mac", "fa:16:3e:ff:ff:ff")
    assert err == "Error 404: Not Found\n  No suitable network interface found\n" or (
        "No suitable network interface found" in err
    )


def test_plug_network(ctl: Ctl, vip: Result) -> None:
    """A member port becomes eth2; plugging it again updates it in place."""
    ctl.amp.hotplug(MEMBER_MAC, peer_addresses=("203.0.113.1/24",))
    args = ["plug", "network", "--mac", MEMBER_MAC, "--fixed-ip", "203.0.113.2,203.0.113.0/24,203.0.113.1"]
    assert ctl.ok(*args) == "OK (202)\nPlugged on interface eth2\n"
    reply = json.loads(ctl.ok(*args, "--json"))
    assert reply == {"status": 202, "message": "OK", "details": "Updated existing interface eth2"}
    assert "is not IP,SUBNET_CIDR,GATEWAY" in ctl.fails(2, "plug", "network", "--mac", "x", "--fixed-ip", "1")


def test_interface(ctl: Ctl, vip: Result) -> None:
    """The interface holding an address; unknown and malformed addresses are the agent's 404 and 400."""
    assert ctl.ok("interface", VRRP_IP) == "eth1\n"
    assert json.loads(ctl.ok("interface", VIP, "--json")) == {"interface": "eth1"}
    assert "Error 404: Error interface not found for IP address" in ctl.fails(1, "interface", "203.0.113.99")
    assert "Error 400: Invalid IP address" in ctl.fails(1, "interface", "not-an-ip")


def test_interface_rules(ctl: Ctl, vip: Result, fixtures_dir: Path) -> None:
    """The controller's SR-IOV rules load on the VIP interface; a body that is not a list is refused here."""
    rules = str(fixtures_dir / "requests" / "interface-rules-amp-a.json")
    assert ctl.ok("interface-rules", VRRP_IP, rules) == "OK (200)\n"
    assert "must hold a JSON list" in ctl.fails(2, "interface-rules", VRRP_IP, ctl.file("r.json", "{}"))
    bad = ctl.file("bad.json", '[{"protocol": "ICMP", "cidr": null, "port": 1}]')
    assert "Error 400" in ctl.fails(1, "interface-rules", VRRP_IP, bad)


# -- load balancers ----------------------------------------------------------------------------
def test_lb_lifecycle(ctl: Ctl, vip: Result, fixtures_dir: Path) -> None:
    """upload, get, reload (starts), listeners, start, stop, delete; then the config is gone (404)."""
    config = render(fixtures_dir, "single-http.cfg", ctl.amp)
    path = ctl.file("haproxy.cfg", config)
    out = ctl.ok("lb", "upload", SINGLE_HTTP_LB, path)
    assert out == f"OK (202)\netag {hashlib.md5(config).hexdigest()}\n"
    assert json.loads(ctl.ok("--json", "lb", "upload", SINGLE_HTTP_LB, path))["status"] == 202
    assert ctl.ok("lb", "get", SINGLE_HTTP_LB).startswith("# Configuration for loadbalancer")
    ctl.ok("lb", "get", SINGLE_HTTP_LB, "-o", str(ctl.folder / "copy.cfg"))
    assert (ctl.folder / "copy.cfg").read_bytes() == config
    started = f"OK (202)\nConfiguration file is valid\nhaproxy daemon for {SINGLE_HTTP_LB} started\n"
    assert ctl.ok("lb", "reload", SINGLE_HTTP_LB) == started
    assert LISTENER in ctl.ok("listeners") and "ACTIVE" in ctl.ok("listeners")
    assert json.loads(ctl.ok("listeners", "--json")) == [
        {"status": "ACTIVE", "uuid": LISTENER, "type": "HTTP"}
    ]
    assert ctl.ok("lb", "start", SINGLE_HTTP_LB) == started
    assert ctl.ok("lb", "reload", SINGLE_HTTP_LB) == f"OK (202)\nListener {SINGLE_HTTP_LB} reloaded\n"
    assert ctl.ok("lb", "stop", SINGLE_HTTP_LB) == f"OK (202)\nListener {SINGLE_HTTP_LB} stoped\n"
    assert json.loads(ctl.ok("listeners", "--json"))[0]["status"] == "STOPPED"
    assert ctl.ok("lb", "delete", SINGLE_HTTP_LB) == "OK (200)\n"
    err = ctl.fails(1, "lb", "get", SINGLE_HTTP_LB)
    assert err == f"Error 404: Loadbalancer Not Found\n  No loadbalancer with UUID: {SINGLE_HTTP_LB}\n"


def test_lb_errors(ctl: Ctl) -> None:
    """haproxy's refusal is printed with its output; --json errors are JSON on stderr; bad input exits 2."""
    bad = ctl.file("bad.cfg", "global\n    BAD_LINE\n")
    err = ctl.fails(1, "lb", "upload", SINGLE_HTTP_LB, bad)
    assert err.startswith("Error 400: Invalid request\n  ") and "BAD_LINE" in err
    err = ctl.fails(1, "--json", "lb", "start", "0000dead-0000-4000-8000-000000000000")
    assert json.loads(err)["error"]["status"] == 404
    assert json.loads(err)["error"]["message"] == "Loadbalancer Not Found"
    assert "cannot read" in ctl.fails(2, "lb", "upload", SINGLE_HTTP_LB, str(ctl.folder / "missing.cfg"))
    assert "Error 400: Invalid request" in ctl.fails(1, "lb", "stop", "not_an-id")


def test_lb_upload_from_stdin(ctl: Ctl, fixtures_dir: Path) -> None:
    """``-`` reads the config from stdin."""
    result = ctl("lb", "upload", SINGLE_HTTP_LB, "-", input=render(fixtures_dir, "single-http.cfg", ctl.amp))
    assert result.exit_code == 0 and result.stdout.startswith("OK (202)")
    ctl.ok("lb", "delete", SINGLE_HTTP_LB)


# -- certificates and agent configuration ------------------------------------------------------
def test_cert_put_md5_delete(ctl: Ctl) -> None:
    """A tenant PEM is stored (name from --name or the file), its md5 matches, it is deleted."""
    pem = ctl.amp.ca.issue("www.example.com", server=True).bundle
    path = ctl.file("www.example.com.pem", pem)
    assert ctl.ok("cert", "put", SINGLE_HTTP_LB, path).startswith("OK (200)\netag ")
    assert ctl.ok("cert", "put", SINGLE_HTTP_LB, path, "--name", "other.pem").startswith("OK (200)")
    assert ctl.ok("cert", "md5", SINGLE_HTTP_LB, "www.example.com.pem") == hashlib.md5(pem).hexdigest() + "\n"
    body = json.loads(ctl.ok("cert", "md5", SINGLE_HTTP_LB, "other.pem", "--json"))
    assert body == {"md5sum": hashlib.md5(pem).hexdigest()}
    for name in ("www.example.com.pem", "other.pem"):
        assert ctl.ok("cert", "delete", SINGLE_HTTP_LB, name) == "OK (200)\n"
    err = ctl.fails(1, "cert", "md5", SINGLE_HTTP_LB, "other.pem")
    assert err == "Error 404: Certificate Not Found\n  No certificate with filename: other.pem\n"


def test_cert_errors(ctl: Ctl) -> None:
    """A PEM without a certificate, and a bad file name, are the agent's 400s."""
    assert "Error 400: No certificate found" in ctl.fails(
        1,
        "cert",
        "put",
        SINGLE_HTTP_LB,
        ctl.file("x.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
    )
    assert "Error 400: Filename has wrong format" in ctl.fails(1, "cert", "md5", SINGLE_HTTP_LB, ".pem")


def test_server_cert_rotate(ctl: Ctl) -> None:
    """A new server certificate is taken live (the next command's handshake uses it); junk is refused."""
    pem = ctl.amp.ca.issue(ctl.amp.amphora_id, server=True).bundle
    assert ctl.ok("server-cert", "rotate", ctl.file("server.pem", pem)) == "OK (202)\n"
    assert json.loads(ctl.ok("info", "--json"))["uuid"] == ctl.amp.amphora_id
    assert "Error 400: No certificate found" in ctl.fails(
        1, "server-cert", "rotate", ctl.file("j.pem", "junk")
    )


def test_config_push(ctl: Ctl) -> None:
    """The agent takes its own file back; an invalid value is refused with the option named."""
    good = ctl.amp.config_file.read_bytes()
    assert ctl.ok("config", "push", ctl.file("agent.conf", good)) == "OK (202)\n"
    bad = ctl.file("bad.conf", "[controller_worker]\nloadbalancer_topology = ACTIVE\n")
    err = ctl.fails(1, "config", "push", bad)
    assert err.startswith("Error 400: Invalid configuration file\n") and "loadbalancer_topology" in err


# -- heartbeats and failures -------------------------------------------------------------------
def test_heartbeat_listen(ctl: Ctl) -> None:
    """The agent's heartbeats arrive, verify with the key and print as JSON lines; a wrong key drops them."""
    argv = [AMPHORACTL, "heartbeat", "listen", "--port", str(ctl.heartbeat_port), "--count", "1"]
    done = subprocess.run(
        [*argv, "--key", KEY, "--timeout", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    message = json.loads(done.stdout.splitlines()[0])["message"]
    assert message["id"] == ctl.amp.amphora_id and message["ver"] == 3
    done = subprocess.run(
        [*argv, "--key", "wrong", "--timeout", "1.5"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1 and done.stdout == "" and "dropped" in done.stderr


def test_heartbeat_listen_needs_a_key(ctl: Ctl) -> None:
    """Without a key nothing is listened to."""
    assert "a key is needed" in ctl.fails(2, "heartbeat", "listen", "--port", "1", "--count", "1")


def test_unreachable_agent_exits_3(ctl: Ctl) -> None:
    """Nothing listening: retried, then 'agent unreachable' with the cause and exit code 3."""
    err = ctl.fails(3, "--url", "https://[2001:db8:f00:ffff::9]:9443", "--connect-timeout", "0.5", "info")
    assert err.startswith("Error: agent unreachable\n") and "2 attempt(s)" in err


def test_wrong_ca_is_refused(ctl: Ctl) -> None:
    """An agent whose certificate our CA did not sign is not trusted."""
    other = CertificateAuthority()
    ca = ctl.file("other-ca.pem", other.cert_pem)
    assert "CERTIFICATE_VERIFY_FAILED" in ctl.fails(3, "--ca", ca, "--retries", "1", "info")


# -- keepalived (last: a stopped keepalived with a VRRP config stops the heartbeats) ------------
def test_vrrp_upload_start_reload_stop(ctl: Ctl, vip: Result, fixtures_dir: Path) -> None:
    """The controller's VRRP config is stored; keepalived starts, reloads and stops."""
    config = keepalived_config(fixtures_dir, 0, ctl.amp.base)
    assert ctl.ok("vrrp", "upload", ctl.file("vrrp.conf", config)).startswith("OK (200)\netag ")
    assert ctl.ok("vrrp", "start") == "OK (202)\nkeepalived started\n"
    assert ctl.ok("vrrp", "reload") == "OK (202)\nkeepalived reloaded\n"
    assert (
        ctl.ok("vrrp", "stop", "--json")
        == json.dumps({"status": 202, "message": "OK", "details": "keepalived stoped"}, indent=2) + "\n"
    )


def test_udp_listener_upload_get_delete(ctl: Ctl, fixtures_dir: Path) -> None:
    """An LVS listener config is stored and read back; a missing one is the agent's 404."""
    listener = "8493c22a-786d-4871-aaa0-c4d82fe865d9"
    text = (fixtures_dir / "lvs" / "udp-listener.conf").read_text()
    text = text.replace("/var/lib/octavia", str(ctl.amp.base))
    assert ctl.ok("udp", "upload", listener, ctl.file("udp.conf", text)).startswith("OK (200)")
    assert ctl.ok("udp", "get", listener) == text
    assert ctl.ok("lb", "delete", listener) == "OK (200)\n"
    assert "Error 404: UDP Listener Not Found" in ctl.fails(1, "udp", "get", listener)

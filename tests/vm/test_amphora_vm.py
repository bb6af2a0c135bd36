"""The amphora image as Nova boots it: config drive, systemd, DHCP, mutual TLS, heartbeats, logs.

The reset, with what must survive it, is the session's last VM test (``test_vm_reboot``)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from amphora_agent.health import codec
from lab import configdrive, vm
from lab.amphora_vm import AMPHORA_ID, Amphora

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


def test_agent_answers_mutual_tls_on_the_dhcp_address(amphora: Amphora) -> None:
    """The agent serves /info over mutual TLS on the address dnsmasq leased to the management NIC."""
    assert amphora.address.startswith("198.51.100.")
    with amphora.controller.client(amphora.address) as api:
        assert api.info().get("uuid") in (AMPHORA_ID, None)


def test_a_client_without_a_certificate_is_refused(amphora: Amphora) -> None:
    """No client certificate: the TLS handshake fails before any handler runs."""
    ctx = ssl.create_default_context(cafile=str(amphora.controller.workdir / "ca.pem"))
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError)),
        socket.create_connection((amphora.address, 9443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=AMPHORA_ID) as tls,
    ):
        tls.sendall(b"GET /1.0/info HTTP/1.1\r\nHost: amphora\r\n\r\n")  # TLS 1.3: refused on read
        assert tls.recv(100) == b"", "the agent answered a client without a certificate"
        raise ConnectionResetError("closed without an answer")


def test_info_reports_the_image_package_versions(amphora: Amphora) -> None:
    """/info names the haproxy, keepalived and ipvsadm packages installed in the image."""
    with amphora.controller.client(amphora.address) as api:
        info = api.info()
    for package in ("haproxy", "keepalived", "ipvsadm"):
        installed = amphora.guest("dpkg-query", "-W", "-f=${Version}", package).split(":", 1)[-1]
        assert info[f"{package}_version"] == installed  # type: ignore[literal-required]


def test_config_drive_files_have_their_modes_and_certs_are_in_memory(amphora: Amphora) -> None:
    """The four files are in place, keys and the agent config 0600; base_cert_dir is a 0700 tmpfs."""
    modes = amphora.guest("stat", "-c", "%n %a %U", *amphora.files).splitlines()
    assert modes == [
        f"{configdrive.SERVER_PEM} 600 root",
        f"{configdrive.CLIENT_CA} 600 root",
        f"{configdrive.AGENT_CONF} 600 root",
        f"{configdrive.RSYSLOG_CONF} 644 root",
    ]
    assert amphora.guest("cat", configdrive.RSYSLOG_CONF) == amphora.files[configdrive.RSYSLOG_CONF]
    mount = amphora.guest("findmnt", "-n", "-o", "FSTYPE,OPTIONS", "/var/lib/octavia/certs")
    assert mount.startswith("tmpfs") and "mode=700" in mount
    assert amphora.guest("systemctl", "is-enabled", "haproxy", "keepalived", check=False).split() == [
        "masked",
        "masked",
    ]


def test_ipvs_and_the_load_balancer_kernel_settings_are_there(amphora: Amphora) -> None:
    """ip_vs loads (UDP/SCTP listeners) and the sysctl settings of the existing images apply."""
    amphora.guest("modprobe", "ip_vs")
    assert "IP Virtual Server" in amphora.guest("ipvsadm", "-L", "-n")
    assert amphora.guest("sysctl", "-n", "net.ipv4.ip_nonlocal_bind").strip() == "1"
    assert amphora.guest("sysctl", "-n", "net.core.somaxconn").strip() == "65534"


def test_the_host_name_resolves_without_a_dns_server(amphora: Amphora) -> None:
    """keepalived looks the host name up at every start; the lab's DNS server never answers (as on
    a management network without one), so only /etc/hosts keeps that from stalling it for seconds."""
    assert amphora.guest("getent", "hosts", "amphora").split()[:2] == ["127.0.1.1", "amphora"]


def test_heartbeats_reach_the_health_manager_and_decode(amphora: Amphora) -> None:
    """The agent's heartbeats arrive at the controller_ip_port_list target and pass the decoder."""
    datagrams = amphora.controller.receive("heartbeat", timeout=30)
    assert datagrams, "no heartbeat within 30 s"
    message = codec.decode(datagrams[-1], "fixture-heartbeat-key")
    assert message["id"] == AMPHORA_ID


def test_administrative_logs_reach_the_syslog_target(amphora: Amphora) -> None:
    """rsyslog forwards the agent's own log lines (local1) to the admin target of 10-rsyslog.conf."""
    amphora.guest("logger", "-p", "local1.info", "-t", "amphora-agent", "admin-log-probe")
    lines = amphora.controller.receive("admin", timeout=30, until=b"admin-log-probe")
    assert any(b"amphora-agent" in line for line in lines), lines[-5:]
    assert any(b"admin-log-probe" in line for line in lines)


def test_a_hot_plugged_nic_is_left_down_for_the_agent(amphora: Amphora) -> None:
    """A NIC attached after boot (QMP, as Nova's port attach) gets no address and stays down."""
    amphora.vm.hotplug("fa:16:3e:00:00:99", "br0", "tap-hotplug")
    links = vm.wait_for(
        "the hot-plugged NIC in the guest",
        lambda: next(
            (line for line in amphora.guest("ip", "-br", "link").splitlines() if "fa:16:3e:00:00:99" in line),
            None,
        ),
        30,
        interval=0.5,
    )
    time.sleep(2)  # give networkd the chance to (wrongly) configure it
    name = links.split()[0]
    assert "DOWN" in amphora.guest("ip", "-br", "link", "show", name)
    assert "inet" not in amphora.guest("ip", "address", "show", name)

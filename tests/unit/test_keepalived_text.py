"""keepalived's config-test outcome classification, LVS config parsing, and the rendered scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.keepalived import config_text
from amphora_agent.probes import health_checker, vrrp_check

CONF = "/var/lib/octavia/vrrp/octavia-keepalived.conf.new"
# ``keepalived -t -l`` on the controller's vrrp-master.conf (exit code 6), as keepalived 2.2.7 prints it
CONTROLLER_VRRP_TEST = f"""({CONF}: Line 38) VRRP parsed invalid IP gateway. skipping IP...
({CONF}: Line 38) unknown route keyword gateway
({CONF}: Line 41) VRRP parsed invalid IP gateway. skipping IP...
({CONF}: Line 41) unknown route keyword gateway
SECURITY VIOLATION - scripts are being executed but script_security not enabled.
"""
# a checker dry start (keepalived -n -l -D -C) of a broken copy of lvs/udp-listener.conf
LVS = "/var/lib/octavia/lvs/octavia-keepalivedlvs-8493c22a-786d-4871-aaa0-c4d82fe865d9.conf.new"
T = "Fri Nov 27 03:35:48 2026: "  # keepalived prefixes console lines with the time
BROKEN_DRY_START = f"""{T}Starting Keepalived v2.2.7 (01/16,2022)
{T}Opening file '{LVS}'.
{T}Configuration file {LVS}
{T}Changing syslog ident to Keepalived_amphora-haproxy
{T}NOTICE: setting config option max_auto_priority should result in better keepalived performance
{T}Starting Healthcheck child process, pid=5876
{T}({LVS}: Line 12) PARSER : unknown [NOPE] routing method for virtual server.
{T}Script user 'keepalived_script' does not exist
{T}({LVS}: Line 33) Unknown keyword 'weigth'
{T}Virtual server [ipv4-group]:0: no forwarding method set, setting default NAT
{T}SECURITY VIOLATION - check scripts are being executed but script_security not enabled.
{T}Initializing ipvs
{T}IPVS: Can't initialize ipvs: No such file or directory
{T}pid 5876 exited with permanent error FATAL. Terminating
{T}Stopped Keepalived v2.2.7 (01/16,2022)
"""


# -- classification ----------------------------------------------------------------------------
def test_controller_vrrp_config_has_only_warnings() -> None:
    """The controller's own config (gateway host routes, no script security) is not fatal."""
    verdict = config_text.classify(CONTROLLER_VRRP_TEST)
    assert verdict.ok
    assert len(verdict.warnings) == 5
    assert config_text.classify("").ok


def test_older_controllers_state_master_with_nopreempt_is_a_warning() -> None:
    """Controllers up to 2024.1 render ``state MASTER`` with ``nopreempt``: keepalived clears
    nopreempt and runs; that is accepted and logged, never a 400 (keepalived 2.2.7's own words)."""
    older = CONTROLLER_VRRP_TEST + (
        "(1255f92418da44a0aad723512f2c0594) Warning - nopreempt will not work with initial state MASTER"
        " - clearing\n"
    )
    verdict = config_text.classify(older)
    assert verdict.ok
    assert verdict.warnings[-1].endswith("initial state MASTER - clearing")
    assert "2024.1" in (config_text.warning_reason(verdict.warnings[-1]) or "")


@pytest.mark.parametrize(
    "line",
    [
        f"({CONF}: Line 11) Unknown keyword 'priorty'",
        f"({CONF}: Line 9) WARNING - interface eth7 for vrrp_instance x doesn't exist",
        "Non-existent interface specified in configuration",
        "There are 1 missing '}'s or extra '{'s",
        f"({CONF}: Line 10) number '300' outside range [1, 255]",
        "(1255f92418da44a0aad723512f2c0594) the virtual router id must be set",
        "(1255f92418da44a0aad723512f2c0594) No VIP specified; at least one is sensible",
        "Disabling track script check_script since not found/accessible",
        f"({CONF}: Line 22) Configuration error: VRRP instance[x] malformed src address[y]. Skipping...",
        "Config files missing '/nonexistent.conf'.",
        "some diagnostic keepalived adds in a later release",
    ],
)
def test_everything_else_keepalived_says_is_fatal(line: str) -> None:
    """An allow-list: any diagnostic that is not a known warning rejects the config."""
    verdict = config_text.classify(CONTROLLER_VRRP_TEST + line + "\n")
    assert verdict.fatal == (line,)
    assert verdict.report().startswith(line + "\ntolerated warnings:\n")


def test_dry_start_counts_only_parser_lines_and_known_errors() -> None:
    """A checker dry start logs progress; only its parser diagnostics decide, timestamps stripped."""
    verdict = config_text.classify(BROKEN_DRY_START, dry_start=True)
    assert verdict.fatal == (
        f"({LVS}: Line 12) PARSER : unknown [NOPE] routing method for virtual server.",
        f"({LVS}: Line 33) Unknown keyword 'weigth'",
    )
    assert "Script user 'keepalived_script' does not exist" in verdict.warnings
    clean = "\n".join(line for line in BROKEN_DRY_START.splitlines() if "Line" not in line)
    assert config_text.classify(clean, dry_start=True).ok
    missing_ns = "Fri Nov 27 03:35:48 2026: Unable to set network namespace nope - exiting\n"
    assert not config_text.classify(missing_ns, dry_start=True).ok


def test_verdicts_merge_without_duplicates() -> None:
    """Two checks of the same config report each line once."""
    one = config_text.Verdict(("a",), ("w",))
    assert one.merged(config_text.Verdict(("a", "b"), ("w",))) == config_text.Verdict(("a", "b"), ("w",))


def test_agent_rules_on_top_of_keepalived() -> None:
    """A VRRP config needs a vrrp_instance; an LVS config names the controller's namespace or ours."""
    assert config_text.vrrp_problems("vrrp_instance x {\n}\n") == []
    assert config_text.vrrp_problems("global_defs {\n}\n") != []
    assert config_text.lvs_problems("net_namespace amphora-haproxy\n", "amphora-haproxy") == []
    assert config_text.lvs_problems("net_namespace amphora-haproxy\n", "amp-7-haproxy") == []
    assert config_text.lvs_problems("net_namespace amp-7-haproxy\n", "amp-7-haproxy") == []
    assert config_text.lvs_problems("# no namespace line\n", "amphora-haproxy") == []
    assert "other" in config_text.lvs_problems("net_namespace other\n", "amphora-haproxy")[0]


@pytest.mark.parametrize("name", ["udp-listener.conf", "sctp-listener.conf", "udp-dualstack.conf"])
def test_run_copy_names_the_agents_namespace_and_nothing_else(fixtures_dir: Path, name: str) -> None:
    """The controller's constant namespace becomes the agent's in keepalived's copy; every other line
    (and so every line number keepalived reports) stays; no copy where the names agree."""
    text = (fixtures_dir / "lvs" / name).read_text()
    assert config_text.lvs_run_text(text, "amphora-haproxy") is None
    run = config_text.lvs_run_text(text, "amp-7-haproxy")
    assert run is not None
    changed = [(a, b) for a, b in zip(text.splitlines(), run.splitlines(), strict=True) if a != b]
    assert changed == [("net_namespace amphora-haproxy", "net_namespace amp-7-haproxy")]
    assert config_text.parse_lvs(run).namespace == "amp-7-haproxy"
    assert run.endswith("\n") == text.endswith("\n")


def test_run_copy_leaves_nested_namespace_words() -> None:
    """Only the top-level ``net_namespace`` is keepalived's namespace line."""
    text = "net_namespace amphora-haproxy  \nvirtual_server x {\n    net_namespace amphora-haproxy\n}\n"
    assert config_text.lvs_run_text(text, "mine") == (
        "net_namespace mine  \nvirtual_server x {\n    net_namespace amphora-haproxy\n}\n"
    )


# -- LVS parsing -------------------------------------------------------------------------------
def test_parse_udp_listener(fixtures_dir: Path) -> None:
    """Ids, namespace, VIP, protocol, members (the disabled one without address) and their checks."""
    config = config_text.parse_lvs((fixtures_dir / "lvs" / "udp-listener.conf").read_text())
    assert config.loadbalancer_id == "826a3c05-e225-4376-b463-b6e0650b030c"
    assert config.listener_id == "8493c22a-786d-4871-aaa0-c4d82fe865d9"
    assert (config.namespace, config.vips, config.protocols) == (
        "amphora-haproxy",
        (("198.51.100.40", 53),),
        ("UDP",),
    )
    assert [(m.address, m.port, m.check, m.enabled) for m in config.members] == [
        ("203.0.113.61", 53, "MISC_CHECK", True),
        ("203.0.113.62", 53, "MISC_CHECK", True),
        (None, None, None, False),
    ]
    assert config.members[0].member_id == "657b7bee-3f52-48b3-89ee-d942eac7b04a"
    assert config.members[2].member_id == "df02afcb-3543-4b54-a797-b8bf6737f324"
    assert config.members[1].misc_path == "/var/lib/octavia/lvs/check/udp_check.sh 203.0.113.62 53"
    assert config.has_virtual_server and config.health_monitor


def test_parse_sctp_and_dual_stack(fixtures_dir: Path) -> None:
    """SCTP with its checker command; both families of a dual-stack listener (every VIP, normalised)."""
    sctp = config_text.parse_lvs((fixtures_dir / "lvs" / "sctp-listener.conf").read_text())
    assert sctp.protocols == ("SCTP",)
    assert sctp.members[1].misc_path == "amphora-health-checker sctp -t 4 203.0.113.72 3869"
    dual = config_text.parse_lvs((fixtures_dir / "lvs" / "udp-dualstack.conf").read_text())
    assert dual.vips == (("198.51.100.50", 5060), ("2001:db8:101::50", 5060))
    assert [(m.address, m.check) for m in dual.members] == [
        ("203.0.113.81", "HTTP_GET"),
        ("2001:db8:200::81", "HTTP_GET"),
    ]


def test_parse_disabled_listener() -> None:
    """A disabled listener has no virtual service: its status is OFFLINE, never ACTIVE."""
    text = (
        "# Configuration for Loadbalancer 826a3c05-e225-4376-b463-b6e0650b030c\n"
        "# Listener 8493c22a-786d-4871-aaa0-c4d82fe865d9 is disabled\n\nnet_namespace amphora-haproxy\n"
    )
    config = config_text.parse_lvs(text)
    assert not config.has_virtual_server and config.members == () and config.listener_id is None


# -- scripts -----------------------------------------------------------------------------------
def run(script: Path, *args: str) -> int:
    """Run a rendered script with bash; its exit code."""
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, timeout=20, check=False
    ).returncode


def test_check_script_fails_when_any_check_fails(tmp_path: Path) -> None:
    """``check_script.sh`` runs every file of its folder: passes with none or all passing, else fails."""
    checks = tmp_path / "check_scripts"
    checks.mkdir()
    script = tmp_path / "check_script.sh"
    script.write_text(config_text.check_script_sh(checks))
    assert run(script) == 0
    (checks / "a.sh").write_text("exit 0\n")
    assert run(script) == 0
    for failing in range(256):  # exit codes that sum to 256 must not wrap around to success
        (checks / f"b{failing}.sh").write_text("exit 1\n")
    assert run(script) == 1


def test_nothing_to_serve_and_haproxy_check(tmp_path: Path) -> None:
    """No load balancer: fail (stay BACKUP). The haproxy check quotes its paths."""
    (tmp_path / "none.sh").write_text(config_text.NOTHING_TO_SERVE_SH)
    assert run(tmp_path / "none.sh") == 1
    text = config_text.haproxy_check_sh("/usr/bin/python3", Path("/x/vrrp_check.py"), [Path("/b/a b.sock")])
    assert "/usr/bin/python3 -I -S /x/vrrp_check.py '/b/a b.sock'" in text


def test_lvs_check_counts_listeners_that_should_run(tmp_path: Path) -> None:
    """A ``running`` marker needs a live pid; stopped listeners (no marker) do not count."""
    script = tmp_path / "lvs_udp_check.sh"
    script.write_text(config_text.lvs_check_sh(tmp_path))
    assert run(script) == 0
    (tmp_path / "octavia-keepalivedlvs-a.running").touch()
    (tmp_path / "octavia-keepalivedlvs-a.pid").write_text(f"{os.getpid()}\n")
    assert run(script) == 0
    (tmp_path / "octavia-keepalivedlvs-b.running").touch()  # should run, no pid file
    assert run(script) == 1
    (tmp_path / "octavia-keepalivedlvs-b.pid").write_text("999999999\n")  # a pid that cannot exist
    assert run(script) == 1
    (tmp_path / "octavia-keepalivedlvs-b.running").unlink()
    assert run(script) == 0


def test_udp_check_reports_ncs_verdict(tmp_path: Path) -> None:
    """``udp_check.sh IP PORT``: 0 while something listens, non-zero on ICMP port unreachable."""
    script = tmp_path / "udp_check.sh"
    script.write_text(config_text.UDP_CHECK_SH)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listening:
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        assert run(script, "127.0.0.1", str(port)) == 0
    assert run(script, "127.0.0.1", str(port)) != 0


def test_python_script_wrapper(tmp_path: Path) -> None:
    """The wrapper execs the script with its arguments."""
    target = tmp_path / "t.py"
    target.write_text("import sys\nsys.exit(int(sys.argv[1]))\n")
    wrapper = tmp_path / "w"
    wrapper.write_text(config_text.python_script_sh("python3", target))
    assert run(wrapper, "7") == 7


# -- the checkers keepalived runs --------------------------------------------------------------
@pytest.fixture
def stats_socket(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket answering each connection with the next queued reply (b"" closes silently)."""
    path = tmp_path / "lb.sock"
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(100)
                conn.sendall(replies.pop(0) if replies else b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    stop.set()
    thread.join(2)
    server.close()


def test_vrrpcheck_counts_silent_and_missing_sockets(stats_socket: tuple[Path, list[bytes]]) -> None:
    """Exit status = number of sockets without an answer; a missing socket fails too."""
    path, replies = stats_socket
    replies += [b"# pxname,svname\n", b""]
    assert vrrp_check.main([str(path)]) == 0
    assert vrrp_check.main([str(path)]) == 1  # connected, no data
    assert vrrp_check.main([str(path), str(path.with_name("gone.sock"))]) == 2
    assert vrrp_check.main([]) == 0


def test_sctp_checker_packets() -> None:
    """CRC-32C matches its check value; an INIT carries the tag and a checksum over the packet."""
    assert health_checker.crc32c(b"123456789") == 0xE3069283
    data = health_checker.packet(5000, 3868, 0, health_checker.init_chunk(0x01020304))
    assert len(data) == 32 and data[12] == health_checker.INIT
    zeroed = data[:8] + b"\0\0\0\0" + data[12:]
    assert int.from_bytes(data[8:12], "little") == health_checker.crc32c(zeroed)
    assert health_checker.parse(data, socket.AF_INET6) == (5000, 3868, 0, 1, data[12:])

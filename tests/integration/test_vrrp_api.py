"""VRRP through the API on one amphora: config checks, actions, supervision, check chain, transitions.

The amphora's haproxy namespace gets an ``eth1`` holding amp-a's vrrp_ip (the controller's configs
name it), so keepalived really runs and, alone on its network, becomes MASTER of the VIP.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amphora_agent.system.haproxy import is_running, read_pid
from lab import namespaces
from lab.vrrp import (
    CLIENT_IP,
    LB_ID,
    MEMBER_IPS,
    VIP,
    Timers,
    haproxy_config,
    keepalived_config,
)

pytestmark = pytest.mark.integration

TIMERS = Timers("tests", advert_int=1, interval=1, fall=1, rise=1)
VRRP_PID = Path("vrrp") / "octavia-keepalived.pid"


@pytest.fixture
def amp(amphora: namespaces.Amphora, backends: namespaces.Backends) -> namespaces.Amphora:
    """The running amphora with eth1 (198.51.100.141/25) and two members on our side."""
    amphora.wire_tenant(
        vips=[],
        member_addresses=[f"{ip}/25" for ip in (CLIENT_IP, *MEMBER_IPS)],
        haproxy_side=["198.51.100.141/25"],
    )
    for key in ("net.ipv4.ip_nonlocal_bind", "net.ipv6.ip_nonlocal_bind"):
        namespaces.sh("sysctl", "-qw", f"{key}=1", netns=amphora.haproxy_ns)
    backends.start(MEMBER_IPS[0], 80, "member-1")
    return amphora


@pytest.fixture
def vrrp_conf(amp: namespaces.Amphora, fixtures_dir: Path) -> bytes:
    """The controller's MASTER config for this amphora's paths, with short check timers."""
    return keepalived_config(fixtures_dir, 0, amp.base, TIMERS)


@pytest.fixture
def lb(amp: namespaces.Amphora, fixtures_dir: Path) -> str:
    """A running load balancer on the VIP, so the check chain passes and keepalived may be MASTER."""
    with amp.client() as api:
        body = haproxy_config(fixtures_dir, amp.base)
        api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy", content=body).raise_for_status()
        api.put(f"/1.0/loadbalancer/{LB_ID}/reload").raise_for_status()
    return LB_ID


def keepalived_pid(amp: namespaces.Amphora) -> int | None:
    """The live main keepalived named by the VRRP pid file."""
    pid = read_pid(amp.base / VRRP_PID)
    return pid if is_running(pid, "keepalived") else None


def holds_vip(amp: namespaces.Amphora) -> bool:
    """Whether keepalived put the VIP on eth1."""
    return f" {VIP}/" in namespaces.sh("ip", "-4", "-o", "addr", "show", "dev", "eth1", netns=amp.haproxy_ns)


def run_check_chain(amp: namespaces.Amphora) -> int:
    """Run ``vrrp/check_script.sh`` as keepalived does; its exit code."""
    script = amp.base / "vrrp" / "check_script.sh"
    return subprocess.run([str(script)], capture_output=True, timeout=30, check=False).returncode


def test_controller_configs_are_accepted_with_their_warnings_logged(
    amp: namespaces.Amphora, fixtures_dir: Path
) -> None:
    """Both controller configs (keepalived -t exits non-zero on them) are stored; the warnings are logged."""
    with amp.client() as api:
        for index in (0, 1):
            body = keepalived_config(fixtures_dir, index, amp.base)
            reply = api.put("/1.0/vrrp/upload", content=body)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"message": "OK"}
            assert reply.headers["ETag"] == hashlib.md5(body).hexdigest()
            assert (amp.base / "vrrp" / "octavia-keepalived.conf").read_bytes() == body
    assert os.access(amp.base / "vrrp" / "check_script.sh", os.X_OK)
    log = amp.log_file.read_text()
    assert "unknown route keyword gateway" in log
    assert "SECURITY VIOLATION" in log
    assert keepalived_pid(amp) is None  # an upload starts nothing


def test_older_controllers_state_master_with_nopreempt_is_accepted_and_runs(
    amp: namespaces.Amphora, fixtures_dir: Path, lb: str
) -> None:
    """A controller up to 2024.1 renders ``state MASTER`` with ``nopreempt`` (vrrp-*-14.0.0.conf):
    stored (200), keepalived's "nopreempt will not work" warning logged, and it runs and takes the VIP."""
    with amp.client() as api:
        for index in (1, 0):  # the BACKUP's config has no warning; the MASTER's is stored last
            body = keepalived_config(fixtures_dir, index, amp.base, TIMERS, release="14.0.0")
            assert (b"state MASTER" if index == 0 else b"state BACKUP") in body
            reply = api.put("/1.0/vrrp/upload", content=body)
            assert reply.status_code == 200, reply.text
            assert (amp.base / "vrrp" / "octavia-keepalived.conf").read_bytes() == body
        assert api.put("/1.0/vrrp/start").json() == {"message": "OK", "details": "keepalived started"}
    assert namespaces.wait_until(lambda: holds_vip(amp), 10), "keepalived never became MASTER"
    log = amp.log_file.read_text()
    assert "VRRP config accepted with a keepalived warning" in log
    assert "nopreempt will not work with initial state MASTER - clearing" in log


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("priority 100", "priorty 100"), "Unknown keyword 'priorty'"),
        (lambda t: t.replace("interface eth1", "interface eth7"), "interface eth7"),
        (lambda t: t.rsplit("}", 1)[0], "missing '}'"),
        (lambda t: t.replace("virtual_router_id 1", "virtual_router_id 300"), "VRID '300' not valid"),
    ],
    ids=["typo", "no-such-interface", "unbalanced", "bad-vrid"],
)
def test_fatal_errors_are_rejected_and_change_nothing(
    amp: namespaces.Amphora, vrrp_conf: bytes, edit: Callable[[str], str], expected: str
) -> None:
    """A fatal keepalived error: 400 with its output; stored config and running keepalived untouched."""
    with amp.client() as api:
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        assert api.put("/1.0/vrrp/start").json()["details"] == "keepalived started"
        pid = keepalived_pid(amp)
        reply = api.put("/1.0/vrrp/upload", content=edit(vrrp_conf.decode()).encode())
        assert reply.status_code == 400
        assert expected in reply.json()["details"]
    assert (amp.base / "vrrp" / "octavia-keepalived.conf").read_bytes() == vrrp_conf
    assert pid is not None and keepalived_pid(amp) == pid


def test_actions_start_reload_stop(amp: namespaces.Amphora, vrrp_conf: bytes, lb: str) -> None:
    """start, start-while-running (a reload), reload (VRRP state kept), stop, and reload of a stopped one."""
    with amp.client() as api:
        unknown = api.put("/1.0/vrrp/RESTART")
        assert (unknown.status_code, unknown.json()["details"]) == (400, "Unknown action: restart")
        assert api.put("/1.0/vrrp/start").status_code == 500  # nothing uploaded yet
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        assert api.put("/1.0/vrrp/start").json() == {"message": "OK", "details": "keepalived started"}
        pid = keepalived_pid(amp)
        assert namespaces.wait_until(lambda: holds_vip(amp), 10), "keepalived never became MASTER"
        for action in ("start", "reload"):
            reply = api.put(f"/1.0/vrrp/{action}")
            assert (reply.status_code, reply.json()["details"]) == (202, "keepalived reloaded")
            assert keepalived_pid(amp) == pid
            assert not namespaces.wait_until(lambda: not holds_vip(amp), 2, 0.05), (
                "the reload dropped the VIP"
            )
        assert api.put("/1.0/vrrp/stop").json()["details"] == "keepalived stoped"
        assert keepalived_pid(amp) is None and not holds_vip(amp)
        assert api.put("/1.0/vrrp/reload").json()["details"] == "keepalived started"
        assert keepalived_pid(amp) is not None


def test_killed_keepalived_is_restarted_also_after_an_agent_restart(
    amp: namespaces.Amphora, vrrp_conf: bytes, lb: str
) -> None:
    """The supervisor restarts a killed keepalived; a restarted agent starts it again (reboot recovery)."""
    with amp.client() as api:
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        api.put("/1.0/vrrp/start").raise_for_status()
    first = keepalived_pid(amp)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert namespaces.wait_until(lambda: keepalived_pid(amp) not in (None, first), 10), "not restarted"
    amp.stop_agent()
    for pid in amp.keepalived_processes():
        os.kill(pid, signal.SIGKILL)
    assert namespaces.wait_until(lambda: not amp.keepalived_processes(), 5)
    amp.start_agent()
    assert keepalived_pid(amp) is not None  # started before the agent answered its first request
    assert namespaces.wait_until(lambda: holds_vip(amp), 10)


@pytest.mark.parametrize("target", ["main", "vrrp child"])
def test_killed_keepalived_is_back_within_two_seconds(
    amp: namespaces.Amphora, vrrp_conf: bytes, lb: str, target: str
) -> None:
    """SIGKILL of keepalived's main process (the supervisor restarts it) or of its VRRP child (keepalived
    respawns it): running again within 2 s; a restarted main becomes MASTER again."""
    with amp.client() as api:
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        api.put("/1.0/vrrp/start").raise_for_status()
    assert namespaces.wait_until(lambda: holds_vip(amp), 10), "keepalived never became MASTER"
    main = keepalived_pid(amp)
    child = read_pid(amp.base / "vrrp" / "octavia-keepalived.vrrp.pid")
    assert main is not None and child is not None
    killed = time.monotonic()
    os.kill(main if target == "main" else child, signal.SIGKILL)

    def back() -> bool:
        child_now = read_pid(amp.base / "vrrp" / "octavia-keepalived.vrrp.pid")
        return keepalived_pid(amp) is not None and child_now != child and is_running(child_now, "keepalived")

    assert namespaces.wait_until(back, 2.0, 0.02), f"keepalived ({target}) not back 2 s after the kill"
    print(f"keepalived ({target}) back after {time.monotonic() - killed:.2f} s")
    if target == "main":  # a new VRRP instance: it takes over the VIP again (its child did not stop)
        assert namespaces.wait_until(lambda: holds_vip(amp), 10), (
            "the restarted keepalived never became MASTER"
        )


def test_check_chain_follows_the_load_balancers(
    amp: namespaces.Amphora, vrrp_conf: bytes, fixtures_dir: Path
) -> None:
    """No load balancer: the chain fails; a running one: it passes; haproxy dead: it fails; deleted: fails."""
    haproxy_check = amp.base / "vrrp" / "check_scripts" / "haproxy_check_script.sh"
    with amp.client() as api:
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        assert run_check_chain(amp) != 0  # nothing to serve: stay BACKUP
        api.put(
            f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy",
            content=haproxy_config(fixtures_dir, amp.base),
        )
        api.put(f"/1.0/loadbalancer/{LB_ID}/reload").raise_for_status()
        assert f"{LB_ID}.sock" in haproxy_check.read_text()
        assert run_check_chain(amp) == 0
        amp.stop_agent()  # nothing restarts haproxy now
        for pid in amp.haproxy_processes():
            os.kill(pid, signal.SIGKILL)
        assert namespaces.wait_until(lambda: not amp.haproxy_processes(), 5)
        assert run_check_chain(amp) != 0
    amp.start_agent()
    with amp.client() as api:
        assert run_check_chain(amp) == 0  # restarted at boot
        api.put(f"/1.0/loadbalancer/{LB_ID}/stop").raise_for_status()
        assert not haproxy_check.exists() and run_check_chain(amp) == 0  # stopped on purpose
        api.delete(f"/1.0/listeners/{LB_ID}").raise_for_status()
        assert run_check_chain(amp) != 0


def agent_config_body(amp: namespaces.Amphora, topology: str) -> bytes:
    """The agent's INI file with another ``loadbalancer_topology``."""
    amp.extra_config.setdefault("controller_worker", {})["loadbalancer_topology"] = topology
    lines = []
    for section, values in amp.config_sections().items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    return "\n".join(lines).encode()


def test_topology_transition_answers_503_until_vrrp_is_set_up(
    amp: namespaces.Amphora, vrrp_conf: bytes, fixtures_dir: Path
) -> None:
    """SINGLE -> ACTIVE_STANDBY: listener changes get 503 until keepalived runs; back: until it stops."""
    lb_body = haproxy_config(fixtures_dir, amp.base)
    put_lb = f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy"
    with amp.client() as api:
        assert api.put(put_lb, content=lb_body).status_code == 202
        assert api.put("/1.0/config", content=agent_config_body(amp, "ACTIVE_STANDBY")).status_code == 202
        for reply in (
            api.put(put_lb, content=lb_body),
            api.put(f"/1.0/loadbalancer/{LB_ID}/reload"),
            api.delete(f"/1.0/listeners/{LB_ID}"),
        ):
            assert reply.status_code == 503
            assert reply.json()["message"] == "Topology transition in progress"
            assert "SINGLE to ACTIVE_STANDBY" in reply.json()["details"]
        assert api.get("/1.0/details").json()["topology_status"] == "TRANSITIONING"
        assert api.get("/1.0/listeners").status_code == 200
        api.put("/1.0/vrrp/upload", content=vrrp_conf).raise_for_status()
        assert api.put(f"/1.0/loadbalancer/{LB_ID}/reload").status_code == 503  # uploaded, not running
        api.put("/1.0/vrrp/start").raise_for_status()
        assert api.put(f"/1.0/loadbalancer/{LB_ID}/reload").status_code == 202
        assert api.get("/1.0/details").json()["topology_status"] == "OK"
        assert api.put("/1.0/config", content=agent_config_body(amp, "SINGLE")).status_code == 202
        assert api.put(f"/1.0/loadbalancer/{LB_ID}/reload").status_code == 503  # keepalived still runs
        api.put("/1.0/vrrp/stop").raise_for_status()
        assert api.put(f"/1.0/loadbalancer/{LB_ID}/reload").status_code == 202

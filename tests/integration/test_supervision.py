"""Supervision without an init system: haproxy survives the agent, and the agent brings haproxy back."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from lab import namespaces
from tests.integration.helpers import (
    SINGLE_HTTP_LB,
    SINGLE_HTTP_VIP,
    Load,
    get,
    render,
    wire_single_http,
)

pytestmark = pytest.mark.integration


def serving(amp: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path) -> int:
    """Upload and start the single-http LB; return its haproxy master pid."""
    wire_single_http(amp, backends)
    with amp.client() as api:
        api.put(
            f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy",
            content=render(fixtures_dir, "single-http.cfg", amp),
        ).raise_for_status()
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
    assert get(SINGLE_HTTP_VIP)[0] == 200
    return amp.haproxy_pids()[0]


def answers() -> bool:
    """Whether the VIP answers 200."""
    try:
        return get(SINGLE_HTTP_VIP, timeout=0.5)[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("target", ["master", "worker"])
def test_killed_haproxy_is_back_within_two_seconds(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path, target: str
) -> None:
    """SIGKILL of the haproxy master (or its worker): the supervisor has it serving again within 2 s."""
    master = serving(amphora, backends, fixtures_dir)
    pid = master
    if target == "worker":
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        pid = int(children[0])
    os.kill(pid, signal.SIGKILL)
    assert namespaces.wait_until(lambda: not namespaces.alive(pid), 2.0), f"{target} {pid} survived SIGKILL"
    assert namespaces.wait_until(answers, 2.0), "haproxy not serving 2 s after the kill"
    if target == "master":
        assert amphora.haproxy_pids()[0] != master
        assert namespaces.wait_until(lambda: "started it again" in amphora.log_file.read_text(), 2.0)


def test_agent_restart_under_load_loses_nothing(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """haproxy runs detached: stopping and starting the agent under load fails no request."""
    master = serving(amphora, backends, fixtures_dir)
    with Load(SINGLE_HTTP_VIP) as load:
        amphora.stop_agent(signal.SIGKILL)
        amphora.start_agent()
        with amphora.client() as api:
            assert api.get("/1.0/listeners").json()[0]["status"] == "ACTIVE"
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 20
    assert amphora.haproxy_pids() == [master], "the restarted agent adopted the running haproxy"


def test_rejected_config_keeps_serving(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """A config haproxy rejects answers 400 with haproxy's output; the old config keeps serving."""
    serving(amphora, backends, fixtures_dir)
    stored = (amphora.base / SINGLE_HTTP_LB / "haproxy.cfg").read_bytes()
    with Load(SINGLE_HTTP_VIP, threads=2) as load, amphora.client() as api:
        bad = api.put(
            f"/1.0/loadbalancer/{amphora.amphora_id}/{SINGLE_HTTP_LB}/haproxy",
            content=b"global\n    no_such_keyword 1\n",
        )
        assert bad.status_code == 400
        assert bad.json()["message"] == "Invalid request"
        assert "no_such_keyword" in bad.json()["details"]
        assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").status_code == 202
    assert load.failed == 0, load.errors[:5]
    assert (amphora.base / SINGLE_HTTP_LB / "haproxy.cfg").read_bytes() == stored
    assert (amphora.base / SINGLE_HTTP_LB / "haproxy.cfg.new-failed").exists()


def test_simulated_reboot_starts_what_was_running(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """Agent and haproxy gone, haproxy namespace deleted: the next agent start brings the LB back."""
    serving(amphora, backends, fixtures_dir)
    amphora.stop_agent(signal.SIGKILL)
    for pid in amphora.haproxy_pids():
        namespaces.kill_pid(pid)
    subprocess.run(["ip", "netns", "del", amphora.haproxy_ns], check=True)
    assert not answers()
    # the VIP wiring was in the deleted namespace; the test (not the agent) re-creates it here,
    # and the agent must start haproxy in that namespace once it is back
    namespaces.sh("ip", "link", "del", amphora.tenant.link if amphora.tenant else "", check=False)
    backends.stop()
    wire_single_http(amphora, backends)
    amphora.start_agent()
    assert namespaces.wait_until(answers, 5.0)


def test_stop_start_and_delete(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """stop stops (and the supervisor leaves it stopped), start of a running LB is a no-op, delete cleans."""
    master = serving(amphora, backends, fixtures_dir)
    with amphora.client() as api:
        started = api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/start")
        assert started.status_code == 202 and amphora.haproxy_pids() == [master]
        stopped = api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/stop")
        assert stopped.json() == {"message": "OK", "details": f"Listener {SINGLE_HTTP_LB} stoped"}
        assert not namespaces.wait_until(answers, 1.5), "the supervisor must not restart a stopped LB"
        assert api.get("/1.0/listeners").json()[0]["status"] == "STOPPED"
        assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/start").status_code == 202
        assert namespaces.wait_until(answers, 2.0)
        pid = amphora.haproxy_pids()[0]
        cert = api.put(
            f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/certificates/ca.pem",
            content=(fixtures_dir / "certs-extra" / "root-ca.pem").read_bytes(),
        )
        assert cert.status_code == 200
        assert api.delete(f"/1.0/listeners/{SINGLE_HTTP_LB}").json() == {"message": "OK"}
        assert not namespaces.alive(pid)
        assert not (amphora.base / SINGLE_HTTP_LB).exists()
        assert not (amphora.base / f"{SINGLE_HTTP_LB}.sock").exists()
        assert not (amphora.base / "certs" / SINGLE_HTTP_LB).exists()
        assert api.get("/1.0/listeners").json() == []
        assert api.delete(f"/1.0/listeners/{SINGLE_HTTP_LB}").status_code == 200

"""Faults: a full disk, the agent killed in the middle of uploads, a load balancer removed behind the agent's
back: nothing is lost, nothing crashes."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from amphora_agent.health import codec
from amphora_agent.system import haproxy
from lab import namespaces
from tests.integration.helpers import SINGLE_HTTP_LB, SINGLE_HTTP_VIP, get, render, wire_single_http

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk_amphora(workdir: Path) -> Iterator[namespaces.Amphora]:
    """An agent whose base_path is a 2 MiB tmpfs."""
    amp = namespaces.Amphora(workdir).create()
    amp.base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(amp.base)], check=True)
    try:
        amp.start_agent()
        yield amp
    finally:
        amp.destroy()
        subprocess.run(["umount", "-l", str(amp.base)], check=False)


def test_full_disk_is_a_clear_error_and_keeps_serving(
    small_disk_amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """With base_path full, an upload answers 500 "No space left on device"; nothing is lost."""
    amp = small_disk_amphora
    wire_single_http(amp, backends)
    cfg = render(fixtures_dir, "single-http.cfg", amp)
    url = f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy"
    with amp.client() as api:
        api.put(url, content=cfg).raise_for_status()
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
        filler = amp.base / "filler"
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        stored = (amp.base / SINGLE_HTTP_LB / "haproxy.cfg").read_bytes()
        bigger = cfg + b"\n# " + b"x" * 200_000 + b"\n"
        full = api.put(url, content=bigger)
        assert full.status_code == 500
        assert full.json()["message"] == "No space left on device"
        assert get(SINGLE_HTTP_VIP)[0] == 200
        assert (amp.base / SINGLE_HTTP_LB / "haproxy.cfg").read_bytes() == stored
        assert not list((amp.base / SINGLE_HTTP_LB).glob(".*tmp*")), "a temp file was left behind"
        filler.unlink()
        assert api.put(url, content=bigger).status_code == 202


def upload(amp: namespaces.Amphora, url: str, body: bytes) -> None:
    """PUT ``body``; the agent may be killed under it."""
    try:
        with amp.client() as api:
            api.put(url, content=body)
    except httpx.HTTPError:
        pass  # expected: the agent was killed mid-request


def leftovers(amp: namespaces.Amphora) -> list[Path]:
    """Temp files of interrupted writes in the amphora's folders (the agent removes them at start)."""
    return sorted(amp.workdir.rglob(".*.tmp-*"))


def md5(data: bytes) -> str:
    """Hex md5."""
    return hashlib.md5(data).hexdigest()


def test_sigkill_during_uploads_leaves_old_or_new_files(amphora: namespaces.Amphora) -> None:
    """Kill -9 the agent at random points of config, certificate and agent-config uploads, repeatedly."""
    rng = random.Random(7)
    lb_id = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5"
    cert_pem = amphora.ca.issue("www.example.com", server=True).bundle
    cert_url = f"/1.0/loadbalancer/{lb_id}/certificates/www.pem"
    cfg_url = f"/1.0/loadbalancer/{amphora.amphora_id}/{lb_id}/haproxy"
    base_cfg = (
        f"global\n    stats socket {amphora.base}/{lb_id}.sock mode 0666 level user\n"
        "defaults\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n"
        "frontend f\n    bind 127.0.0.1:8080\n    mode http\n"
    ).encode()
    agent_conf = amphora.config_file.read_bytes()
    with amphora.client() as api:
        api.put(cfg_url, content=base_cfg).raise_for_status()
        api.put(cert_url, content=cert_pem).raise_for_status()
    paths = {
        "cfg": amphora.base / lb_id / "haproxy.cfg",
        "cert": amphora.base / "certs" / lb_id / "www.pem",
        "conf": amphora.config_file,
    }
    known = {
        "cfg": {md5(base_cfg)},
        "cert": {md5(cert_pem)},
        "conf": {md5(agent_conf)},
    }
    for round_ in range(6):
        padding = b"#" + b"p" * rng.randrange(100_000, 2_000_000) + b"\n"
        bodies = {
            "cfg": base_cfg + padding,
            "cert": padding + cert_pem,  # text before the PEM blocks is allowed
            "conf": agent_conf + f"\n# round {round_}\n".encode() + padding,
        }
        for name, body in bodies.items():
            known[name].add(md5(body))
        urls = {"cfg": cfg_url, "cert": cert_url, "conf": "/1.0/config"}

        threads = [
            threading.Thread(target=upload, args=(amphora, urls[name], body)) for name, body in bodies.items()
        ]
        for thread in threads:
            thread.start()
        namespaces.wait_until(lambda: False, rng.uniform(0.0, 0.15))
        amphora.stop_agent(signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        for name, path in paths.items():
            assert md5(path.read_bytes()) in known[name], f"{name} is partial after kill {round_}"
        amphora.start_agent()
        assert not leftovers(amphora), f"temp files left after kill {round_}"
    with amphora.client() as api:
        assert api.get(f"/1.0/loadbalancer/{lb_id}/haproxy").status_code == 200


OTHER_LB, OTHER_LISTENER = "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5", "12aabb74-f964-4687-b62a-91eeb452d5a7"
SINGLE_LISTENER = "922d8f42-59a5-4a50-b10d-9632277e363e"
HEARTBEAT_KEY = "faults-heartbeat-key"


def other_config(amp: namespaces.Amphora) -> bytes:
    """A second load balancer (TCP on the VIP's port 8080) that must not notice the first one's fate."""
    return (
        f"global\n    stats socket {amp.base}/{OTHER_LB}.sock mode 0666 level user\n"
        "defaults\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n"
        f"frontend {OTHER_LISTENER}\n    bind {SINGLE_HTTP_VIP}:8080\n    mode tcp\n"
        f"    default_backend pool:{OTHER_LISTENER}\n"
        f"backend pool:{OTHER_LISTENER}\n    mode tcp\n    server m1 203.0.113.11:80\n"
    ).encode()


def listeners_in_beats(sock: socket.socket, timeout: float = 2.5) -> set[str]:
    """The listener ids of the next heartbeat the agent sends us."""
    sock.settimeout(timeout)
    return set(codec.decode(sock.recv(70000), HEARTBEAT_KEY)["listeners"])


def masters_of(amp: namespaces.Amphora, lb_id: str) -> list[int]:
    """Live haproxy masters running ``lb_id``'s config, whatever their pid files say."""
    return [pid for config, pid in haproxy.masters_by_config(amp.base).items() if config.parent.name == lb_id]


@pytest.mark.parametrize(("removed", "recovery"), [("config", "delete"), ("folder", "upload")])
def test_load_balancer_removed_behind_the_agents_back_is_reported(
    amphora: namespaces.Amphora,
    backends: namespaces.Backends,
    fixtures_dir: Path,
    removed: str,
    recovery: str,
) -> None:
    """haproxy.cfg (or the whole folder) deleted by someone else: /listeners, /details, actions, the
    heartbeat and the supervisor keep working for everything else, the agent logs what is left (its
    haproxy keeps serving), and a DELETE or a new upload puts it right: one haproxy, nothing left over."""
    amp = amphora
    wire_single_http(amp, backends)
    lb_url = f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy"
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as beats, amp.client() as api:
        beats.bind(("::", 0))
        amp.extra_config = {
            "health_manager": {
                "controller_ip_port_list": f"[2001:db8:f00:{amp.index:x}::1]:{beats.getsockname()[1]}",
                "heartbeat_interval": "1",
                "heartbeat_key": HEARTBEAT_KEY,
            }
        }
        amp.write_config()
        api.put("/1.0/config", content=amp.config_file.read_bytes()).raise_for_status()
        for lb_id, body in (
            (SINGLE_HTTP_LB, render(fixtures_dir, "single-http.cfg", amp)),
            (OTHER_LB, other_config(amp)),
        ):
            api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy", content=body).raise_for_status()
            api.put(f"/1.0/loadbalancer/{lb_id}/reload").raise_for_status()
        assert namespaces.wait_until(
            lambda: listeners_in_beats(beats) == {SINGLE_LISTENER, OTHER_LISTENER}, 6
        )
        orphan = masters_of(amp, SINGLE_HTTP_LB)

        if removed == "config":
            (amp.base / SINGLE_HTTP_LB / "haproxy.cfg").unlink()
        else:
            shutil.rmtree(amp.base / SINGLE_HTTP_LB)
        assert api.get("/1.0/listeners").json() == [
            {"status": "ACTIVE", "uuid": OTHER_LISTENER, "type": "TCP"}
        ]
        details = api.get("/1.0/details")
        assert details.status_code == 200 and details.json()["listeners"] == [OTHER_LISTENER]
        assert namespaces.wait_until(lambda: listeners_in_beats(beats) == {OTHER_LISTENER}, 6)
        for action in ("reload", "stop", "start"):
            assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/{action}").status_code == 404
            assert api.put(f"/1.0/loadbalancer/{OTHER_LB}/{action}").status_code == 202
        assert get(SINGLE_HTTP_VIP)[0] == 200, "the orphaned haproxy keeps serving its tenants"
        assert namespaces.wait_until(lambda: "removed behind the agent's back" in amp.log_file.read_text(), 5)

        if recovery == "delete":
            assert api.delete(f"/1.0/listeners/{SINGLE_HTTP_LB}").status_code == 200
            assert not masters_of(amp, SINGLE_HTTP_LB) and not (amp.base / SINGLE_HTTP_LB).exists()
            assert not (amp.base / f"{SINGLE_HTTP_LB}.sock").exists()
        else:
            api.put(lb_url, content=render(fixtures_dir, "single-http.cfg", amp)).raise_for_status()
            api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
            assert len(masters_of(amp, SINGLE_HTTP_LB)) == 1 and masters_of(amp, SINGLE_HTTP_LB) != orphan
            assert get(SINGLE_HTTP_VIP)[0] == 200
        assert namespaces.wait_until(lambda: "without configuration: resolved" in amp.log_file.read_text(), 5)
        killed = masters_of(amp, OTHER_LB)[0]
        os.kill(killed, signal.SIGKILL)  # the supervisor still looks after the others
        assert namespaces.wait_until(lambda: masters_of(amp, OTHER_LB) not in ([], [killed]), 2.0)
    assert "Traceback" not in amp.log_file.read_text()

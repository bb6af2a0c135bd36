"""Faults: a full disk, and the agent killed in the middle of uploads, lose nothing."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from amphora_agent import lab
from tests.integration.helpers import SINGLE_HTTP_LB, SINGLE_HTTP_VIP, get, render, wire_single_http

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk_amphora(workdir: Path) -> Iterator[lab.Amphora]:
    """An agent whose base_path is a 2 MiB tmpfs."""
    amp = lab.Amphora(workdir).create()
    amp.base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(amp.base)], check=True)
    try:
        amp.start_agent()
        yield amp
    finally:
        amp.destroy()
        subprocess.run(["umount", "-l", str(amp.base)], check=False)


def test_full_disk_is_a_clear_error_and_keeps_serving(
    small_disk_amphora: lab.Amphora, backends: lab.Backends, fixtures_dir: Path
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


def upload(amp: lab.Amphora, url: str, body: bytes) -> None:
    """PUT ``body``; the agent may be killed under it."""
    try:
        with amp.client() as api:
            api.put(url, content=body)
    except httpx.HTTPError:
        pass  # expected: the agent was killed mid-request


def md5(data: bytes) -> str:
    """Hex md5."""
    return hashlib.md5(data).hexdigest()


def test_sigkill_during_uploads_leaves_old_or_new_files(amphora: lab.Amphora) -> None:
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
        lab.wait_until(lambda: False, rng.uniform(0.0, 0.15))
        amphora.stop_agent(signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        for name, path in paths.items():
            assert md5(path.read_bytes()) in known[name], f"{name} is partial after kill {round_}"
        amphora.start_agent()
    with amphora.client() as api:
        assert api.get(f"/1.0/loadbalancer/{lb_id}/haproxy").status_code == 200

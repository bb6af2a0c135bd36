"""UDP listeners in the heartbeats of a real agent, received here as the health manager would.

Where the kernel has IPVS, a started UDP listener is listed OPEN with its pool keyed by the bare pool
id. Where it has none (``/proc/net/ip_vs`` absent), keepalived cannot run: heartbeats keep going,
list no UDP listener (as the existing agent's, since nothing runs), and the agent says why once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amphora_agent.health import codec
from lab import namespaces

pytestmark = pytest.mark.integration

KEY = "lvs-heartbeat-key"
LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"  # lvs/udp-listener.conf
POOL = "6115f603-b223-4106-9a11-be9183161cfe"
IPVS = Path("/proc/net/ip_vs")
NO_IPVS_LINE = "heartbeats list no UDP or SCTP listener while keepalived cannot run"


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """The health manager's UDP socket, on every address of our namespace."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        yield sock


def next_beat(sock: socket.socket, timeout: float = 4.0) -> dict[str, Any]:
    """The next heartbeat, decoded with the key."""
    sock.settimeout(timeout)
    return dict(codec.decode(sock.recv(70000), KEY))


def test_udp_listener_in_heartbeats(workdir: Path, receiver: socket.socket, fixtures_dir: Path) -> None:
    """With IPVS the started listener is OPEN with its pool; without, beats go on and say why once."""
    amp = namespaces.Amphora(workdir)
    port = receiver.getsockname()[1]
    amp.extra_config = {
        "health_manager": {
            "controller_ip_port_list": f"[2001:db8:f00:{amp.index:x}::1]:{port}",
            "heartbeat_interval": "1",
            "heartbeat_key": KEY,
        }
    }
    amp.create()
    try:
        amp.start_agent()
        text = (
            (fixtures_dir / "lvs" / "udp-listener.conf")
            .read_text()
            .replace("/var/lib/octavia", str(amp.base))
        )
        body = text.encode()  # net_namespace amphora-haproxy as the controller sends it
        with amp.client() as api:
            put = api.put(f"/1.0/listeners/{amp.amphora_id}/{LISTENER}/udp_listener", content=body)
            assert put.status_code == 200, put.text
            started = api.put(f"/1.0/loadbalancer/{LISTENER}/start")
        next_beat(receiver)  # may have been built before the upload
        beats = [next_beat(receiver) for _ in range(3)]
        if IPVS.exists():
            assert started.status_code == 202, started.text
            assert all(beat["listeners"][LISTENER]["status"] == "OPEN" for beat in beats)
            assert POOL in beats[-1]["pools"]
        else:
            assert started.status_code == 500
            assert all(beat["listeners"] == {} and beat["pools"] == {} for beat in beats)
            time.sleep(0.2)  # the log line is flushed by the agent's handler
            assert amp.log_file.read_text().count(NO_IPVS_LINE) == 1
    finally:
        amp.destroy()

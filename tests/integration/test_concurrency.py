"""Concurrent uploads and reloads: no 5xx, a consistent final state, no leaked processes."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import namespaces
from tests.integration.helpers import get

pytestmark = pytest.mark.integration

VIP = "198.51.100.10"


def config(amp: namespaces.Amphora, lb_id: str, port: int, marker: str) -> bytes:
    """A controller-style config whose one listener answers ``marker`` itself (no members needed)."""
    return f"""# Configuration for loadbalancer {lb_id}
global
    daemon
    user nobody
    stats socket {amp.base}/{lb_id}.sock mode 0666 level user
    server-state-file {amp.base}/{lb_id}/servers-state
    maxconn 500

defaults
    log global
    retries 3
    timeout connect 5000
    timeout client 50000
    timeout server 50000

frontend {uuid.uuid5(uuid.NAMESPACE_OID, lb_id)}
    maxconn 500
    bind {VIP}:{port}
    mode http
    http-request return status 200 content-type text/plain string {marker}
""".encode()


def masters(amp: namespaces.Amphora) -> list[int]:
    """Live haproxy masters of this amphora (processes whose parent is not a haproxy of ours)."""
    processes = amp.haproxy_processes()
    return [pid for pid in processes if namespaces.parent_pid(pid) not in processes]


def storm(amp: namespaces.Amphora, lb_id: str, port: int, rounds: int, statuses: list[int]) -> None:
    """Upload and reload ``rounds`` times, recording every status."""
    with amp.client() as api:
        for n in range(rounds):
            marker = f"{lb_id[:8]}-{threading.get_ident()}-{n}"
            put = api.put(
                f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy",
                content=config(amp, lb_id, port, marker),
            )
            reload = api.put(f"/1.0/loadbalancer/{lb_id}/reload")
            statuses.extend([put.status_code, reload.status_code])


def test_fifty_concurrent_uploads_and_reloads_on_one_lb(amphora: namespaces.Amphora) -> None:
    """10 clients x 5 upload+reload on one LB: all 2xx, one master, the stored config runs."""
    amphora.wire_tenant(vips=[f"{VIP}/24"], member_addresses=["198.51.100.1/24"])
    lb_id = str(uuid.uuid4())
    statuses: list[int] = []
    with ThreadPoolExecutor(10) as pool:
        for _ in range(10):
            pool.submit(storm, amphora, lb_id, 80, 5, statuses)
    assert len(statuses) == 100 and set(statuses) == {202}
    assert len(masters(amphora)) == 1
    with amphora.client() as api:
        stored = api.get(f"/1.0/loadbalancer/{lb_id}/haproxy").text
        marker = stored.rsplit("string ", 1)[1].strip()
        assert api.put(f"/1.0/loadbalancer/{lb_id}/reload").status_code == 202
    assert get(VIP, 80) == (200, marker.encode())


def test_concurrent_uploads_and_reloads_across_ten_lbs(amphora: namespaces.Amphora) -> None:
    """10 LBs upload+reload at once, 5 rounds each: all 2xx, ten masters, every LB answers."""
    amphora.wire_tenant(vips=[f"{VIP}/24"], member_addresses=["198.51.100.1/24"])
    lbs = [str(uuid.uuid4()) for _ in range(10)]
    statuses: list[int] = []
    with ThreadPoolExecutor(10) as pool:
        for port, lb_id in enumerate(lbs, 8000):
            pool.submit(storm, amphora, lb_id, port, 5, statuses)
    assert len(statuses) == 100 and set(statuses) == {202}
    assert len(masters(amphora)) == 10
    for port, lb_id in enumerate(lbs, 8000):
        status, body = get(VIP, port)
        assert status == 200 and body.startswith(lb_id[:8].encode())
    with amphora.client() as api:
        for lb_id in lbs:
            assert api.delete(f"/1.0/listeners/{lb_id}").status_code == 200
    assert masters(amphora) == []

"""Requests that overlap (the controller re-sends after timeouts) all succeed and leave one whole file."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tests.api.conftest import AMP_ID, SINGLE_LB, Agent
from tests.conftest import FIXTURES

THREADS = 6
ROUNDS = 6


def hammer(agent: Agent, path: str, bodies: list[bytes], rounds: int = ROUNDS) -> list[int]:
    """PUT each body ``rounds`` times from its own thread, all at once; return every status code."""
    codes: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def work(body: bytes) -> None:
        try:
            start.wait(10)
            for _ in range(rounds):
                code = agent.client.put(path, content=body).status_code
                with lock:
                    codes.append(code)
        except BaseException as exc:  # handed to the test below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[0]
    return codes


def no_temp_files(folder: Path) -> bool:
    """No temp file of an atomic write is left behind."""
    return not list(folder.rglob(".*.tmp-*"))


def check(agent: Agent, path: str, bodies: list[bytes], stored: Callable[[], bytes], status: int) -> None:
    """Every overlapping PUT answers ``status`` and the stored file is exactly one of the bodies."""
    codes = hammer(agent, path, bodies)
    assert codes == [status] * (len(bodies) * ROUNDS)
    assert stored() in bodies
    assert no_temp_files(agent.root)


def test_overlapping_server_certificate_rotations(agent: Agent) -> None:
    """Overlapping PUT /1.0/certificate: all 202, and the file holds one whole cert+key pair."""
    bodies = [agent.ca.issue(AMP_ID, server=True).bundle for _ in range(THREADS)]
    check(agent, "/1.0/certificate", bodies, agent.settings.agent_server_cert.read_bytes, 202)


def test_overlapping_agent_config_uploads(agent: Agent) -> None:
    """Overlapping PUT /1.0/config: all 202, and the file is one whole upload."""
    text = agent.render((FIXTURES / "agent" / "amphora-agent-updated.conf").read_text())
    bodies = [
        text.replace("heartbeat_interval = 10", f"heartbeat_interval = {n}").encode()
        for n in range(1, THREADS + 1)
    ]
    config_file = agent.settings.config_file
    assert config_file is not None
    check(agent, "/1.0/config", bodies, config_file.read_bytes, 202)


def test_overlapping_tenant_certificate_uploads(agent: Agent) -> None:
    """Overlapping PUTs of one tenant PEM name: all 200, and the file is one whole upload."""
    bodies = [agent.ca.issue("tenant", server=True).bundle for _ in range(THREADS)]
    path = f"/1.0/loadbalancer/{SINGLE_LB}/certificates/a.pem"
    check(agent, path, bodies, (agent.layout.cert_dir(SINGLE_LB) / "a.pem").read_bytes, 200)


def test_overlapping_haproxy_uploads(agent: Agent) -> None:
    """Overlapping config uploads for one load balancer are serialised: all 202, one whole config stored."""
    base = agent.fixture_config("single-http.cfg")
    bodies = [base + f"# upload {n}\n".encode() for n in range(3)]
    codes = hammer(agent, f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB}/haproxy", bodies, rounds=2)
    assert codes == [202] * 6
    assert agent.layout.haproxy_cfg(SINGLE_LB).read_bytes() in bodies
    assert not agent.layout.haproxy_cfg_new(SINGLE_LB).exists()
    assert no_temp_files(agent.root)

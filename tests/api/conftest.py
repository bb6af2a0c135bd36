"""The real app over real files: a TestClient on the agent ``wire()`` builds, as the daemon does."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amphora_agent import settings
from amphora_agent.api import Services, create_app
from amphora_agent.devcerts import CertificateAuthority
from amphora_agent.layout import Layout
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.system import files, netns
from amphora_agent.wiring import wire
from lab import namespaces
from tests.conftest import FIXTURES

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what this project installs
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

AMP_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"  # the fixtures' amp-s
SINGLE_LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
SINGLE_LISTENER = "922d8f42-59a5-4a50-b10d-9632277e363e"
UNKNOWN_ID = "deadbeef-0000-4000-8000-000000000000"
_names = itertools.count(1)
__all__ = ["AMP_ID", "SINGLE_LB", "SINGLE_LISTENER", "UNKNOWN_ID", "Agent", "TestClient", "substitute"]


def substitute(text: str, base: Path, certs: Path, server_pem: Path, client_ca: Path) -> str:
    """Replace the controller's default paths (cert dir first: it contains the base path)."""
    for old, new in (
        ("/var/lib/octavia/certs", certs),
        ("/var/lib/octavia", base),
        ("/etc/octavia/certs/server.pem", server_pem),
        ("/etc/octavia/certs/client_ca.pem", client_ca),
    ):
        text = text.replace(old, str(new))
    return text


@dataclass
class Agent:
    """One agent's app over a private directory tree, and the paths a test checks."""

    root: Path
    live: LiveSettings
    layout: Layout
    services: Services
    client: TestClient
    ca: CertificateAuthority

    @property
    def settings(self) -> Settings:
        """The settings in force now."""
        return self.live.current

    def render(self, text: str) -> str:
        """A controller file with this agent's paths substituted."""
        s = self.settings
        return substitute(text, s.base_path, s.base_cert_dir, s.agent_server_cert, s.agent_server_ca)

    def fixture_config(self, name: str) -> bytes:
        """A controller-rendered haproxy.cfg with this agent's paths."""
        return self.render((FIXTURES / "haproxy" / name).read_text()).encode()

    def tree(self) -> dict[str, bytes]:
        """Every file under the agent's root (relative path -> bytes): what a request may have written."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() or path.is_socket():
                found[str(path.relative_to(self.root))] = b"" if path.is_socket() else path.read_bytes()
            elif path.is_dir():
                found[str(path.relative_to(self.root)) + "/"] = b""
        return found


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private folder (haproxy's unix sockets allow 108 bytes), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="api") as path:
        yield Path(path)


@pytest.fixture
def agent(workdir: Path) -> Iterator[Agent]:
    """The app on the controller's own agent file (paths moved under ``workdir``), through a TestClient.

    The haproxy namespace gets a name of its own and does not exist until a start creates it; whatever
    a test started is stopped by PID and the namespace deleted afterwards.
    """
    ca = CertificateAuthority()
    files.atomic_write(workdir / "ca.pem", ca.cert_pem, files.PUBLIC)
    files.atomic_write(workdir / "server.pem", ca.issue(AMP_ID, server=True).bundle)
    namespace = f"api{os.getpid() % 100000}-{next(_names)}"
    text = substitute(
        (FIXTURES / "agent" / "amphora-agent.conf").read_text(),
        workdir / "lib",
        workdir / "lib" / "certs",
        workdir / "server.pem",
        workdir / "ca.pem",
    )
    text = text.replace("[amphora_agent]\n", f"[amphora_agent]\nnetwork_namespace = {namespace}\n")
    text = text.replace("haproxy_cmd = /usr/sbin/haproxy", f"haproxy_cmd = {namespaces.HAPROXY_CMD}")
    files.atomic_write(workdir / "amphora-agent.conf", text.encode())
    wired = wire(settings.load(workdir / "amphora-agent.conf"))
    try:
        wired.start_up()
        with TestClient(create_app(wired.services)) as client:
            yield Agent(workdir, wired.live, wired.layout, wired.services, client, ca)
    finally:
        stop_everything(wired.live.current, namespace)


def stop_everything(settings: Settings, namespace: str) -> None:
    """Kill every haproxy master named by a pid file under the base path, then drop the namespace."""
    for pid_file in settings.base_path.glob("*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            if b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                namespaces.kill_pid(pid)
    if netns.exists(namespace):
        namespaces.sh("ip", "netns", "del", namespace, check=False)

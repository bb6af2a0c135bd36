"""Temp files a killed writer leaves behind are removed at start, and only those."""

from __future__ import annotations

import os
from pathlib import Path

from amphora_agent import wiring
from amphora_agent.layout import Layout
from amphora_agent.settings import Settings
from amphora_agent.system import files


def test_stale_temps_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """Temps of dead writers go (recursively if asked); stored files, and a live writer's temp, stay."""
    (tmp_path / "lb").mkdir()
    stale = [tmp_path / ".haproxy.cfg.tmp-999999999-1", tmp_path / "lb" / ".haproxy.cfg.new.tmp-999999998-7"]
    live = tmp_path / f".peer-name.tmp-{os.getppid()}-1"  # our parent is alive
    kept = [tmp_path / "haproxy.cfg", tmp_path / "lb" / "haproxy.cfg", tmp_path / ".hidden", live]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(files.clean_stale_temps(tmp_path, recursive=True)) == sorted(stale)
    assert all(path.exists() for path in kept)
    assert files.clean_stale_temps(tmp_path / "missing") == []


def test_start_cleans_the_agents_folders_only_of_its_own_temps(tmp_path: Path) -> None:
    """At start: every temp under base_path and base_cert_dir; in shared folders only the agent's files'."""
    base, certs, etc = tmp_path / "lib", tmp_path / "lib" / "certs", tmp_path / "etc"
    for folder in (base / "lb", certs / "lb", etc / "interfaces"):
        folder.mkdir(parents=True)
    config, server = etc / "amphora-agent.conf", etc / "server.pem"
    gone = [
        base / "lb" / ".haproxy.cfg.tmp-999999999-1",
        certs / "lb" / ".www.pem.tmp-999999999-2",
        etc / ".amphora-agent.conf.tmp-999999999-3",
        etc / ".server.pem.tmp-999999999-4",
        etc / "interfaces" / ".eth1.json.tmp-999999999-5",
    ]
    foreign = etc / ".other.conf.tmp-999999999-6"
    for path in [*gone, foreign]:
        path.write_bytes(b"partial")
    settings = Settings(
        base_path=base,
        base_cert_dir=certs,
        agent_server_cert=server,
        agent_server_network_dir=etc / "interfaces",
        config_file=config,
    )
    wiring.drop_crash_leftovers(Layout.from_settings(settings), settings)
    assert not any(path.exists() for path in gone)
    assert foreign.exists()

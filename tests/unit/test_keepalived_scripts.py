"""The VRRP check chain kept current as load balancers and LVS listeners come and go; LVS discovery."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from amphora_agent.keepalived.vrrp import CheckScripts
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers.service import LoadBalancers
from amphora_agent.settings import LiveSettings, Settings, Topology

LB = "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"
LISTENER = "8493c22a-786d-4871-aaa0-c4d82fe865d9"


def chain(tmp_path: Path, topology: Topology = "ACTIVE_STANDBY") -> tuple[CheckScripts, Layout, LiveSettings]:
    """Check scripts over a base path in ``tmp_path``."""
    live = LiveSettings(Settings(base_path=tmp_path, loadbalancer_topology=topology))
    paths = Layout(tmp_path, tmp_path / "certs")
    return CheckScripts(live, paths, LoadBalancers(live, Layout(tmp_path, tmp_path / "certs"))), paths, live


def test_lvs_listeners_are_found_as_the_existing_agent_finds_them(tmp_path: Path) -> None:
    """``octavia-keepalivedlvs-<id>.conf`` only: staged, rejected, pid and other files are not listeners."""
    paths = Layout(tmp_path, tmp_path / "certs")
    assert paths.lvs_ids() == []
    paths.lvs_dir.mkdir()
    for name in (
        f"octavia-keepalivedlvs-{LISTENER}.conf",
        "octavia-keepalivedlvs-b.conf.new",
        "octavia-keepalivedlvs-c.conf.new-failed",
        "octavia-keepalivedlvs-d.pid",
        "other.conf",
    ):
        (paths.lvs_dir / name).touch()
    assert paths.lvs_ids() == [LISTENER]
    assert paths.lvs(LISTENER, "check.pid").name == f"octavia-keepalivedlvs-{LISTENER}.check.pid"


def test_single_topology_without_vrrp_writes_nothing(tmp_path: Path) -> None:
    """A SINGLE amphora that never got a VRRP config has no check chain."""
    scripts, paths, _ = chain(tmp_path, "SINGLE")
    scripts.refresh()
    assert not paths.vrrp_dir.exists()


def test_chain_follows_load_balancers_and_listeners(tmp_path: Path) -> None:
    """Nothing: exit 1. A running LB: its socket. Stopped: no haproxy check. LVS: its check. Gone: exit 1."""
    scripts, paths, live = chain(tmp_path)
    haproxy = paths.check_scripts_dir / "haproxy_check_script.sh"
    lvs = paths.check_scripts_dir / "lvs_udp_check.sh"
    scripts.refresh()
    assert paths.check_script.stat().st_mode & 0o777 == 0o755
    assert haproxy.read_text().endswith("exit 1\n")
    (tmp_path / LB).mkdir()
    (tmp_path / LB / "haproxy.cfg").touch()
    (tmp_path / LB / "running").touch()
    scripts.refresh()
    assert f" {tmp_path / LB}.sock\n" in haproxy.read_text()
    (tmp_path / LB / "running").unlink()
    scripts.refresh()
    assert not haproxy.exists()
    paths.lvs_dir.mkdir()
    paths.lvs(LISTENER).touch()
    scripts.refresh()
    assert lvs.exists() and not haproxy.exists()
    (tmp_path / LB / "haproxy.cfg").unlink()
    paths.lvs(LISTENER).unlink()
    scripts.refresh()
    assert not lvs.exists() and haproxy.read_text().endswith("exit 1\n")
    live.replace(dataclasses.replace(live.current, loadbalancer_topology="SINGLE"))
    (tmp_path / LB / "haproxy.cfg").touch()
    (tmp_path / LB / "running").touch()
    scripts.refresh()  # SINGLE without a VRRP config: left alone
    assert haproxy.read_text().endswith("exit 1\n")
    paths.vrrp().touch()
    scripts.refresh()  # a stored VRRP config keeps the chain current in any topology
    assert f" {tmp_path / LB}.sock\n" in haproxy.read_text()

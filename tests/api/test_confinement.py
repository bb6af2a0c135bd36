"""Only the agent's folders: whatever an upload names, and whatever links sit in those folders.

A decoy folder outside the agent's folders is the victim every case aims at; after each case it must
hold exactly what it held before (no file created, changed or deleted, not even a ``.bak``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.decoy import Decoy
from tests.api.conftest import AMP_ID, SINGLE_LB, Agent

CERT = "0fea25e0-aaaa-4bbb-8ccc-000000000001.pem"
URL = f"/1.0/loadbalancer/{AMP_ID}/{SINGLE_LB}/haproxy"
Edit = Callable[[str, Path, Path], str]  # (config, decoy, base) -> config


@pytest.fixture
def decoy(workdir: Path) -> Iterator[Decoy]:
    """The victim folder, beside (not inside) the agent's folders; checked untouched afterwards."""
    made = Decoy(workdir / "decoy")
    yield made
    assert made.changes() == []


def _global(extra: str) -> Edit:
    return lambda text, decoy, base: text.replace(
        "global\n", "global\n" + extra.format(d=decoy, b=base) + "\n", 1
    )


def _replace(old: str, new: str) -> Edit:
    return lambda text, decoy, base: text.replace(old.format(d=decoy, b=base), new.format(d=decoy, b=base), 1)


def _append(extra: str) -> Edit:
    return lambda text, decoy, base: text + extra.format(d=decoy, b=base)


LB = SINGLE_LB
REFUSED: list[tuple[str, Edit, str]] = [
    ("stats-socket", _replace(f"{{b}}/{LB}.sock", "{d}/victim"), "stats socket"),
    ("stats-socket-unix-prefix", _replace(f"{{b}}/{LB}.sock", "unix@{d}/victim"), "stats socket"),
    ("second-stats-socket", _global("    stats socket {d}/other.sock mode 0666"), "stats socket"),
    ("stats-socket-dotdot", _replace(f"{{b}}/{LB}.sock", f"{{b}}/{LB}/../../decoy/victim"), "stats socket"),
    ("stats-socket-env", _replace(f"{{b}}/{LB}.sock", '"${{HOME}}/x.sock"'), "stats socket"),
    ("state-file", _replace(f"{{b}}/{LB}/servers-state", "{d}/servers-state"), "server-state-file"),
    ("state-base", _global("    server-state-base {d}"), "server-state-base"),
    ("backing-file", _append("\nring evil\n    size 32768\n    backing-file {d}/victim\n"), "backing-file"),
    ("lua-load", _global("    lua-load {d}/victim"), "lua-load"),
    ("lua-load-quoted", _global('    "lua-"load {d}/victim'), "lua-load"),
    ("lua-load-escaped", _global(r"    lua\x2dload {d}/victim"), "lua-load"),
    ("lua-load-per-thread", _global("    lua-load-per-thread {d}/victim"), "lua-load-per-thread"),
    ("env-keyword", _global('    "${{KEYWORD}}" {d}/victim'), "environment variable"),
    ("unix-bind", _global("    unix-bind prefix {d}"), "unix-bind"),
    ("program", _append("\nprogram evil\n    command /bin/true\n"), "program"),
    (
        "bind-unix-path",
        _replace("    bind 198.51.100.10:80", "    bind {d}/fe.sock"),
        "bind on a UNIX socket",
    ),
    ("bind-unix-prefix", _replace("    bind 198.51.100.10:80", "    bind unix@{d}/fe.sock"), "UNIX socket"),
    ("bind-list", _replace("    bind 198.51.100.10:80", "    bind 198.51.100.10:80,{d}/fe.sock"), "UNIX"),
]


@pytest.mark.parametrize(("case", "edit", "reason"), REFUSED, ids=[case for case, _, _ in REFUSED])
def test_configs_naming_other_files_are_refused_before_the_check(
    agent: Agent, decoy: Decoy, case: str, edit: Edit, reason: str
) -> None:
    """400 with the line and the reason; haproxy -c never ran on it; nothing outside was touched."""
    body = edit(agent.fixture_config("single-http.cfg").decode(), decoy.root, agent.settings.base_path)
    response = agent.client.put(URL, content=body.encode())
    assert response.status_code == 400, response.text
    assert response.json()["message"] == "Invalid request"
    assert reason in response.json()["details"]
    assert "line " in response.json()["details"]
    assert "ALERT" not in response.json()["details"]  # refused before haproxy -c
    assert not agent.layout.haproxy_cfg(SINGLE_LB).exists()


def test_the_controller_paths_are_accepted(agent: Agent, decoy: Decoy) -> None:
    """The controller renders the agent's own socket and state file: 202 (quoted the same: 202 too)."""
    body = agent.fixture_config("single-http.cfg").decode()
    base = agent.settings.base_path
    quoted = body.replace(f"{base}/{LB}.sock", f"'{base}/{LB}.sock'")
    for text in (body, quoted):
        assert agent.client.put(URL, content=text.encode()).status_code == 202


def _store_directly(agent: Agent, lb_id: str, text: str) -> None:
    """A config stored by an older agent, never checked by this one."""
    folder = agent.layout.lb_dir(lb_id)
    folder.mkdir(parents=True, exist_ok=True)
    agent.layout.haproxy_cfg(lb_id).write_text(text)


def test_delete_removes_only_the_agents_socket(agent: Agent, decoy: Decoy) -> None:
    """A stored config naming a stats socket elsewhere (an older agent kept it): delete leaves that file."""
    text = agent.fixture_config("single-http.cfg").decode()
    _store_directly(
        agent, LB, text.replace(f"{agent.settings.base_path}/{LB}.sock", str(decoy.path("victim")))
    )
    agent.layout.stats_socket(LB).write_bytes(b"")
    assert agent.client.delete(f"/1.0/listeners/{LB}").status_code == 200
    assert not agent.layout.lb_dir(LB).exists()
    assert not agent.layout.stats_socket(LB).exists()


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def test_linked_certificate_folder_is_never_followed(agent: Agent, decoy: Decoy) -> None:
    """``<certs>/<lb>`` a link to elsewhere: PUT and GET refuse (500), DELETE removes nothing there."""
    _link(agent.layout.cert_dir(LB), decoy.path("sub"))
    url = f"/1.0/loadbalancer/{LB}/certificates"
    pem = (agent.root / "server.pem").read_bytes()
    put = agent.client.put(f"{url}/{CERT}", content=pem)
    assert put.status_code == 500
    assert "link" in put.json()["details"]
    assert agent.client.get(f"{url}/www.pem").status_code == 500
    assert agent.client.delete(f"{url}/www.pem").status_code == 200
    assert agent.layout.cert_dir(LB).is_symlink()


def test_linked_certificate_file_is_replaced_not_followed(agent: Agent, decoy: Decoy) -> None:
    """A link in a certificate's place: the upload replaces the link, the file it named is untouched."""
    _link(agent.layout.cert_dir(LB) / CERT, decoy.path("victim"))
    pem = (agent.root / "server.pem").read_bytes()
    assert agent.client.put(f"/1.0/loadbalancer/{LB}/certificates/{CERT}", content=pem).status_code == 200
    assert not (agent.layout.cert_dir(LB) / CERT).is_symlink()
    assert (agent.layout.cert_dir(LB) / CERT).read_bytes() == pem


def test_linked_load_balancer_folder_is_none_of_the_agents(agent: Agent, decoy: Decoy) -> None:
    """``<base>/<lb>`` a link to a folder holding a haproxy.cfg: not listed, not started, not written
    through; DELETE removes the link itself."""
    _link(agent.layout.lb_dir(LB), decoy.path("sub"))
    assert agent.client.get("/1.0/listeners").json() == []
    assert agent.client.get(f"/1.0/loadbalancer/{LB}/haproxy").status_code == 500
    assert agent.client.put(f"/1.0/loadbalancer/{LB}/reload").status_code == 404
    put = agent.client.put(URL, content=agent.fixture_config("single-http.cfg"))
    assert put.status_code == 500
    assert "link" in put.json()["details"]
    assert agent.client.delete(f"/1.0/listeners/{LB}").status_code == 200
    assert not os.path.lexists(agent.layout.lb_dir(LB))


@pytest.mark.parametrize("folder", ["vrrp", "lvs"])
def test_linked_keepalived_folders_are_refused(agent: Agent, decoy: Decoy, folder: str) -> None:
    """``<base>/vrrp`` or ``<base>/lvs`` a link: the uploads that write there answer 500, nothing written."""
    _link(agent.settings.base_path / folder, decoy.path("sub"))
    if folder == "vrrp":
        response = agent.client.put("/1.0/vrrp/upload", content=b"vrrp_instance x {\n}\n")
    else:
        url = f"/1.0/listeners/{AMP_ID}/{LB}/udp_listener"
        response = agent.client.put(url, content=b"net_namespace amphora-haproxy\n")
    assert response.status_code == 500, response.text
    assert "link" in response.json()["details"]


@pytest.mark.parametrize(
    "line",
    [
        'misc_path "/usr/bin/touch {victim}"',
        "notify_up /usr/bin/touch",
        "include {victim}",
    ],
)
@pytest.mark.parametrize("kind", ["vrrp", "lvs"])
def test_keepalived_configs_running_other_programs_are_refused(
    agent: Agent, decoy: Decoy, kind: str, line: str
) -> None:
    """A keepalived config naming another program or file: 400 with the line, before keepalived
    reads it; nothing is stored and the decoy is untouched."""
    victim = decoy.path("victim")
    text = f"vrrp_instance x {{\n}}\nvirtual_server 10.0.0.1 53 {{\n    {line.format(victim=victim)}\n}}\n"
    if kind == "vrrp":
        url, stored = "/1.0/vrrp/upload", agent.layout.vrrp()
    else:
        url, stored = f"/1.0/listeners/{AMP_ID}/{LB}/udp_listener", agent.layout.lvs(LB)
    response = agent.client.put(url, content=text.encode())
    assert response.status_code == 400, response.text
    assert "line 4: " in response.json()["details"]
    assert not stored.exists()


def test_linked_log_file_is_not_appended_through(agent: Agent, decoy: Decoy) -> None:
    """keepalived's log a link elsewhere: the start fails rather than append to the file it names."""
    from amphora_agent.errors import CommandFailed
    from amphora_agent.system import proc

    log = agent.settings.base_path / "lvs" / "x.log"
    _link(log, decoy.path("victim"))
    with pytest.raises((CommandFailed, OSError)):
        proc.detach(["true"], log=log)


@pytest.mark.integration
@pytest.mark.parametrize("named", ["servers-state", "victim"], ids=["state-file", "stats-socket"])
def test_a_stored_config_naming_other_files_is_not_loaded(agent: Agent, decoy: Decoy, named: str) -> None:
    """A stored config changed behind the agent's back (or kept from an older agent) to name other
    files: reload answers 500 and haproxy keeps its config; a start is refused the same way."""
    from tests.api import test_actions

    lb = test_actions.LB
    text = test_actions.config(agent, "one").decode()
    assert (
        agent.client.put(f"/1.0/loadbalancer/{AMP_ID}/{lb}/haproxy", content=text.encode()).status_code == 202
    )
    assert agent.client.put(f"/1.0/loadbalancer/{lb}/reload").status_code == 202  # starts it
    assert agent.client.put(f"/1.0/loadbalancer/{lb}/reload").status_code == 202
    assert "# be_id" in agent.layout.servers_state(lb).read_text()  # the agent's own state file
    own = str(agent.layout.servers_state(lb) if named == "servers-state" else agent.layout.stats_socket(lb))
    agent.layout.haproxy_cfg(lb).write_text(text.replace(own, str(decoy.path(named))))
    for action in ("reload", "stop", "start"):
        reply = agent.client.put(f"/1.0/loadbalancer/{lb}/{action}")
        assert reply.status_code == (202 if action == "stop" else 500), reply.text
        if action != "stop":
            assert reply.json()["message"] == "Refusing the stored configuration"
    assert agent.client.delete(f"/1.0/listeners/{lb}").status_code == 200

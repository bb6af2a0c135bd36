"""``PUT /1.0/config`` refuses a file the agent could not start with: 400 with the reason, nothing changed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import Agent
from tests.conftest import FIXTURES

Edit = Callable[[str, Path], str]  # (config text, agent's work folder) -> config text


def _set(section: str, option: str, value: str) -> Edit:
    """Set ``option`` in ``section`` (replacing its line, or adding one); ``{w}`` is the work folder."""

    def edit(text: str, work: Path) -> str:
        line = f"{option} = {value.format(w=work)}"
        head, header, rest = text.partition(f"[{section}]\n")
        body, next_header, tail = rest.partition("\n[")
        pattern = re.compile(rf"(?m)^{re.escape(option)} = .*$")
        body = pattern.sub(lambda _: line, body, count=1) if pattern.search(body) else f"{line}\n{body}"
        return head + header + body + next_header + tail

    return edit


def _write(name: str, data: bytes) -> Callable[[Path], object]:
    return lambda work: (work / name).write_bytes(data)


def config_body(agent: Agent) -> str:
    """The controller's updated agent config with this agent's paths (it passes as it is)."""
    return agent.render((FIXTURES / "agent" / "amphora-agent-updated.conf").read_text())


REFUSED: list[tuple[str, Edit, Callable[[Path], object] | None, str]] = [
    ("cert-missing", _set("amphora_agent", "agent_server_cert", "{w}/missing.pem"), None, "no such file"),
    (
        "cert-garbage",
        _set("amphora_agent", "agent_server_cert", "{w}/bad.pem"),
        _write("bad.pem", b"no"),
        "load",
    ),
    ("cert-without-key", _set("amphora_agent", "agent_server_cert", "{w}/ca.pem"), None, "does not load"),
    ("ca-missing", _set("amphora_agent", "agent_server_ca", "{w}/missing.pem"), None, "agent_server_ca"),
    ("ca-garbage", _set("amphora_agent", "agent_server_ca", "{w}/bad.pem"), _write("bad.pem", b"no"), "load"),
    ("cert-relative", _set("amphora_agent", "agent_server_cert", "server.pem"), None, "absolute path"),
    ("port-high", _set("haproxy_amphora", "bind_port", "99999"), None, "bind_port"),
    ("port-zero", _set("haproxy_amphora", "bind_port", "0"), None, "bind_port"),
    ("bind-host", _set("haproxy_amphora", "bind_host", "not-an-address"), None, "bind_host"),
    ("base-relative", _set("haproxy_amphora", "base_path", "lib"), None, "absolute path"),
    ("haproxy-missing", _set("haproxy_amphora", "haproxy_cmd", "{w}/no-haproxy"), None, "haproxy_cmd"),
    ("interval-zero", _set("health_manager", "heartbeat_interval", "0"), None, "heartbeat_interval"),
    ("timeout-zero", _set("amphora_agent", "agent_request_read_timeout", "0"), None, "read_timeout"),
    ("facility", _set("amphora_agent", "administrative_log_facility", "8"), None, "facility"),
    ("namespace", _set("amphora_agent", "network_namespace", "../etc"), None, "network_namespace"),
    ("syslog-facility", _set("DEFAULT", "syslog_log_facility", "LOG_NOPE"), None, "syslog"),
    (
        "log-config-missing",
        _set("DEFAULT", "log_config_append", "{w}/missing.ini"),
        None,
        "log_config_append",
    ),
    (
        "log-config-bad",
        _set("DEFAULT", "log_config_append", "{w}/bad.ini"),
        _write("bad.ini", b"[x]\n"),
        "log",
    ),
]


@pytest.mark.parametrize(("case", "edit", "prepare", "reason"), REFUSED, ids=[c for c, _, _, _ in REFUSED])
def test_config_the_agent_cannot_start_with_is_400(
    agent: Agent, case: str, edit: Edit, prepare: Callable[[Path], object] | None, reason: str
) -> None:
    """400 naming the option and why; the file on disk and the settings in force stay as they were."""
    if prepare is not None:
        prepare(agent.root)
    before, settings = agent.tree(), agent.settings
    response = agent.client.put("/1.0/config", content=edit(config_body(agent), agent.root).encode())
    assert response.status_code == 400, response.text
    assert response.json()["message"] == "Invalid configuration file"
    assert reason in response.json()["details"]
    assert agent.tree() == before
    assert agent.settings == settings


def test_a_good_logging_file_is_accepted(agent: Agent) -> None:
    """A logging file fileConfig takes passes (it is applied live by the daemon, see the integration test)."""
    (agent.root / "logging.ini").write_text(LOGGING_INI.format(log=agent.root / "extra.log"))
    body = _set("DEFAULT", "log_config_append", "{w}/logging.ini")(config_body(agent), agent.root)
    assert agent.client.put("/1.0/config", content=body.encode()).status_code == 202
    assert agent.settings.log_config_append == agent.root / "logging.ini"


LOGGING_INI = """[loggers]
keys = root

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = INFO
handlers = file

[handler_file]
class = FileHandler
args = ('{log}',)
formatter = plain

[formatter_plain]
format = extra %(levelname)s %(name)s: %(message)s
"""

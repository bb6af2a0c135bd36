"""What a new agent config needs for the agent to start with it, checked before ``PUT /1.0/config``
stores it: a file the agent could not start with would lock the controller out at the next restart.

``settings.parse_ini`` already refused values of the wrong type or out of range (ports, facilities,
intervals, absolute paths, addresses); here the files the settings name are opened as the agent
will open them: the server certificate with its key and the client CA (by OpenSSL, as the TLS
context loads them), the haproxy binary, and the logging file (by ``logging.config.fileConfig``
in a separate interpreter, so a bad file cannot disturb the agent's own logging).
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from amphora_agent.errors import CommandFailed
from amphora_agent.settings import Settings
from amphora_agent.system import proc

_NO_PASSWORD = b"\0never"  # an encrypted key fails instead of prompting
_FILE_CONFIG = (
    "import logging.config, sys; logging.config.fileConfig(sys.argv[1], disable_existing_loggers=False)"
)


def _loaded(option: str, path: Path, load: Callable[[str], object]) -> str | None:
    try:
        load(str(path))
    except FileNotFoundError:
        return f"[amphora_agent] {option} {path}: no such file"
    except (OSError, ssl.SSLError) as exc:
        return f"[amphora_agent] {option} {path}: does not load ({exc})"
    return None


def tls_problems(settings: Settings) -> list[str]:
    """The client CA and the server certificate (followed by its matching key) load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    found = [
        _loaded(
            "agent_server_ca", settings.agent_server_ca, lambda p: context.load_verify_locations(cafile=p)
        ),
        _loaded(
            "agent_server_cert",
            settings.agent_server_cert,
            lambda p: context.load_cert_chain(p, password=_NO_PASSWORD),
        ),
    ]
    return [problem for problem in found if problem is not None]


def haproxy_problems(settings: Settings) -> list[str]:
    """The haproxy binary is an executable file."""
    cmd = settings.haproxy_cmd
    if not cmd.is_file() or not os.access(cmd, os.X_OK):
        return [f"[haproxy_amphora] haproxy_cmd {cmd}: not an executable file"]
    return []


def logging_problems(settings: Settings) -> list[str]:
    """``log_config_append`` (when set) is a file ``logging.config.fileConfig`` takes."""
    path = settings.log_config_append
    if path is None:
        return []
    if not path.is_file():
        return [f"[DEFAULT] log_config_append {path}: no such file"]
    try:
        proc.run([sys.executable, "-I", "-c", _FILE_CONFIG, str(path)], timeout=10.0)
    except CommandFailed as exc:
        last = (exc.details or "").strip().splitlines()[-1:] or ["it does not load"]
        return [f"[DEFAULT] log_config_append {path}: {last[0]}"]
    return []


def problems(settings: Settings) -> list[str]:
    """Everything that would stop the agent from starting (or from logging) with ``settings``."""
    return tls_problems(settings) + haproxy_problems(settings) + logging_problems(settings)

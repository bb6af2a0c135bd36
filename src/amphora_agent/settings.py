"""The agent configuration: the existing agent's INI file parsed into a frozen, typed Settings.

Same file, sections and option names as the Octavia amphora agent, so an operator's file and the
file the controller pushes with ``PUT /1.0/config`` work unchanged.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import logging
import logging.handlers
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from amphora_agent.errors import InvalidInput

LOG = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path("/etc/octavia/amphora-agent.conf")
Topology = Literal["SINGLE", "ACTIVE_STANDBY"]
TOPOLOGIES: tuple[Topology, ...] = get_args(Topology)
ACTIVE_STANDBY: Topology = "ACTIVE_STANDBY"
TLS_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _optional(text: str) -> str | None:
    return text.strip() or None


def _path(text: str) -> Path:
    path = Path(text.strip())
    if not path.is_absolute():  # relative to what? The agent's working folder is nobody's choice
        raise ValueError(f"{text.strip()!r} is not an absolute path")
    return path


def _optional_path(text: str) -> Path | None:
    return _path(text) if text.strip() else None


def _str(text: str) -> str:
    return text.strip()


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value} is not in {low}..{'' if high is None else high}")
        return value

    return parse


def _ip(text: str) -> str:
    value = text.strip()
    ipaddress.ip_address(value)  # ValueError names the value; the existing agent's option is an IP too
    return value


_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")


def _netns(text: str) -> str:
    value = text.strip()
    if not _NETNS.fullmatch(value):  # it becomes /run/netns/<name>
        raise ValueError(f"{value!r} is not a network namespace name ([A-Za-z0-9_.-], up to 63)")
    return value


def _syslog_facility(text: str) -> str:
    value = text.strip()
    if value.lower().removeprefix("log_") not in logging.handlers.SysLogHandler.facility_names:
        raise ValueError(f"{value!r} is not a syslog facility (LOG_USER, LOG_LOCAL0 ... LOG_LOCAL7)")
    return value


PORT = _int_range(1, 65535)
FACILITY = _int_range(0, 7)
POSITIVE = _int_range(1)


@dataclass(frozen=True)
class Option:
    """One INI option: where it lives, how it parses, and whether PUT /1.0/config may change it live."""

    group: str
    name: str
    parse: Callable[[str], Any]
    mutable: bool = False
    help: str = ""


@dataclass(frozen=True)
class Settings:
    """Every option the agent reads, with the existing agent's defaults."""

    # [amphora_agent]
    agent_server_ca: Path = Path("/etc/octavia/certs/client_ca.pem")
    agent_server_cert: Path = Path("/etc/octavia/certs/server.pem")
    agent_server_network_dir: Path | None = None
    agent_request_read_timeout: int = 180
    agent_tls_protocol: str = "TLSv1.2"
    amphora_id: str | None = None
    administrative_log_facility: int = 1
    user_log_facility: int = 0
    network_namespace: str = "amphora-haproxy"
    pci_rescan_file: Path | None = Path("/sys/bus/pci/rescan")
    # [haproxy_amphora]
    base_path: Path = Path("/var/lib/octavia")
    base_cert_dir: Path = Path("/var/lib/octavia/certs")
    bind_host: str = "::"
    bind_port: int = 9443
    haproxy_cmd: Path = Path("/usr/sbin/haproxy")
    # [health_manager]
    controller_ip_port_list: tuple[str, ...] = ()
    heartbeat_interval: int = 10
    heartbeat_key: str | None = None
    # [controller_worker]
    loadbalancer_topology: Topology = "SINGLE"
    # [DEFAULT]
    debug: bool = False
    log_config_append: Path | None = None
    use_syslog: bool = False
    syslog_log_facility: str = "LOG_USER"
    # [amphora_agent] the API server's limits (extensions, docs/hardening.md)
    agent_max_connections: int = 1000
    agent_tls_handshake_timeout: int = 10
    # where these settings came from (PUT /1.0/config writes back here)
    config_file: Path | None = field(default=None, compare=False)


OPTIONS: dict[tuple[str, str], tuple[str, Option]] = {}


def _register(attr: str, option: Option) -> None:
    OPTIONS[(option.group, option.name)] = (attr, option)


for _attr, _group, _parse, _mutable, _help in (
    ("agent_server_ca", "amphora_agent", _path, False, "CA that signs the controller's client certificates."),
    ("agent_server_cert", "amphora_agent", _path, False, "Server certificate followed by its key."),
    (
        "agent_server_network_dir",
        "amphora_agent",
        _optional_path,
        False,
        "Directory of the interface files (default /etc/octavia/interfaces/).",
    ),
    (
        "agent_request_read_timeout",
        "amphora_agent",
        POSITIVE,
        False,
        "Seconds to read a request, headers and body, from its first byte (docs/hardening.md).",
    ),
    (
        "agent_tls_protocol",
        "amphora_agent",
        _choice(TLS_VERSIONS),
        False,
        "Lowest TLS version accepted (TLS 1.2 is always accepted).",
    ),
    ("amphora_id", "amphora_agent", _optional, False, "This amphora's UUID."),
    (
        "administrative_log_facility",
        "amphora_agent",
        FACILITY,
        False,
        "Syslog facility for admin logs (0-7).",
    ),
    ("user_log_facility", "amphora_agent", FACILITY, False, "Syslog facility for tenant logs (0-7)."),
    (
        "network_namespace",
        "amphora_agent",
        _netns,
        False,
        "Network namespace that holds haproxy and the tenant NICs (extension).",
    ),
    (
        "pci_rescan_file",
        "amphora_agent",
        _optional_path,
        False,
        "Written when a plug finds no NIC with the MAC; empty disables the rescan (extension).",
    ),
    ("base_path", "haproxy_amphora", _path, False, "Where load balancer configs and sockets live."),
    ("base_cert_dir", "haproxy_amphora", _path, False, "Where tenant TLS material lives."),
    ("bind_host", "haproxy_amphora", _ip, False, "Address the API listens on."),
    ("bind_port", "haproxy_amphora", PORT, False, "Port the API listens on."),
    ("haproxy_cmd", "haproxy_amphora", _path, False, "The haproxy binary."),
    ("controller_ip_port_list", "health_manager", _list, True, "Health managers, ip:port, comma separated."),
    ("heartbeat_interval", "health_manager", POSITIVE, True, "Seconds between heartbeats."),
    ("heartbeat_key", "health_manager", _optional, True, "HMAC key of the heartbeats."),
    ("loadbalancer_topology", "controller_worker", _choice(TOPOLOGIES), True, "SINGLE or ACTIVE_STANDBY."),
    ("debug", "DEFAULT", _bool, True, "Log at debug level."),
    (
        "log_config_append",
        "DEFAULT",
        _optional_path,
        True,
        "A logging configuration file (fileConfig format).",
    ),
    ("use_syslog", "DEFAULT", _bool, False, "Also log to syslog."),
    ("syslog_log_facility", "DEFAULT", _syslog_facility, False, "Syslog facility of the agent's own log."),
    (
        "agent_max_connections",
        "amphora_agent",
        POSITIVE,
        False,
        "Connections the API holds at once; over it the oldest one still without a TLS handshake is "
        "closed (extension, docs/hardening.md).",
    ),
    (
        "agent_tls_handshake_timeout",
        "amphora_agent",
        POSITIVE,
        False,
        "Seconds from a connection's accept to the end of its TLS handshake (extension).",
    ),
):
    _register(_attr, Option(_group, _attr, _parse, _mutable, _help))


def parse_ini(text: str, source: Path | None = None) -> Settings:
    """Parse the agent INI text; unknown options are logged and ignored, bad values raise InvalidInput."""
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, default_section="\0none", comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(source or "<upload>"))
    except configparser.Error as exc:
        raise InvalidInput("Invalid configuration file", str(exc)) from exc
    values: dict[str, Any] = {}
    for section in parser.sections():
        for name, raw in parser.items(section):
            known = OPTIONS.get((section, name))
            if known is None:
                LOG.info("ignoring unknown option [%s] %s", section, name)
                continue
            attr, option = known
            try:
                values[attr] = option.parse(raw)
            except ValueError as exc:
                raise InvalidInput("Invalid configuration file", f"[{section}] {name}: {exc}") from exc
    return Settings(**values, config_file=source)


def load(path: Path) -> Settings:
    """Read and parse the agent's config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput("Cannot read configuration file", f"{path}: {exc}") from exc
    return parse_ini(text, path)


def mutable_update(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """Take only the mutable options from ``new``; return the result and the immutable ones that differ."""
    changes: dict[str, Any] = {}
    ignored: list[str] = []
    for attr, option in OPTIONS.values():
        before, after = getattr(old, attr), getattr(new, attr)
        if before == after:
            continue
        if option.mutable:
            changes[attr] = after
        else:
            ignored.append(f"[{option.group}] {option.name}")
    return dataclasses.replace(old, **changes), ignored


class LiveSettings:
    """The settings in force now: replaced whole when PUT /1.0/config changes mutable options."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Settings], None]] = []

    @property
    def current(self) -> Settings:
        """The settings to use for this operation."""
        return self._settings

    def subscribe(self, listener: Callable[[Settings], None]) -> None:
        """Call ``listener`` with the new settings after every change."""
        self._listeners.append(listener)

    def replace(self, settings: Settings) -> None:
        """Swap in new settings and tell the subscribers."""
        with self._lock:
            self._settings = settings
        for listener in self._listeners:
            listener(settings)

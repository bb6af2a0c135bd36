"""The agent INI file: the controller's files parse, bad ones raise InvalidInput, live updates."""

from __future__ import annotations

from pathlib import Path

import pytest

from amphora_agent import settings
from amphora_agent.errors import InvalidInput
from amphora_agent.settings import LiveSettings, Settings
from tests.conftest import FIXTURES

AGENT = FIXTURES / "agent"
AMP_S = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"


@pytest.mark.parametrize(
    ("name", "controllers", "key"),
    [
        ("amphora-agent.conf", ("203.0.113.130:5555", "203.0.113.131:5555"), "fixture-heartbeat-key"),
        (
            "amphora-agent-updated.conf",
            ("203.0.113.132:5555", "[2001:db8:ff::5]:5555"),
            "fixture-heartbeat-key-rotated",
        ),
    ],
)
def test_fixture_agent_confs_parse(name: str, controllers: tuple[str, ...], key: str) -> None:
    """Both controller-rendered files parse into typed values; their unknown options are ignored."""
    loaded = settings.load(AGENT / name)
    assert loaded.amphora_id == AMP_S
    assert loaded.controller_ip_port_list == controllers
    assert loaded.heartbeat_key == key
    assert loaded.heartbeat_interval == 10
    assert loaded.loadbalancer_topology == "SINGLE"
    assert loaded.base_path == Path("/var/lib/octavia")
    assert loaded.base_cert_dir == Path("/var/lib/octavia/certs")
    assert loaded.bind_host == "::"
    assert loaded.bind_port == 9443
    assert loaded.agent_server_cert == Path("/etc/octavia/certs/server.pem")
    assert loaded.agent_server_ca == Path("/etc/octavia/certs/client_ca.pem")
    assert loaded.agent_tls_protocol == "TLSv1.2"
    assert loaded.agent_request_read_timeout == 180
    assert (loaded.debug, loaded.use_syslog, loaded.syslog_log_facility) == (False, True, "LOG_LOCAL1")
    assert loaded.config_file == AGENT / name


def test_facility_options_in_the_wrong_group_are_ignored() -> None:
    """The template writes the facilities under [haproxy_amphora], where they are not registered."""
    parsed = settings.parse_ini("[haproxy_amphora]\nuser_log_facility = 5\nadministrative_log_facility = 6\n")
    assert (parsed.user_log_facility, parsed.administrative_log_facility) == (0, 1)


def test_empty_file_gives_the_defaults() -> None:
    """Missing options take the existing agent's defaults."""
    assert settings.parse_ini("") == Settings()


@pytest.mark.parametrize(
    ("text", "attr", "expected"),
    [
        ("[haproxy_amphora]\nbind_port = 1\nbind_port = 2\n", "bind_port", 2),
        ("[haproxy_amphora]\nbind_port = 1\n[haproxy_amphora]\nbind_port = 3\n", "bind_port", 3),
        ("[health_manager]\nheartbeat_key = a\nheartbeat_key = b\n", "heartbeat_key", "b"),
    ],
    ids=["same-section", "repeated-section", "string"],
)
def test_repeated_keys_last_wins(text: str, attr: str, expected: object) -> None:
    """A key given twice (also in a repeated section) takes its last value, as oslo.config does."""
    assert getattr(settings.parse_ini(text), attr) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[amphora_agent]\namphora_udp_driver = keepalived_lvs\n",
        "[haproxy_amphora]\nrest_request_conn_timeout = 10\nclient_cert = /x.pem\n",
        "[nova]\nenable_anti_affinity = True\n",
        "[DEFAULT]\nlog_dir = /var/log\n",
    ],
    ids=["deprecated", "controller-only", "unknown-group", "unknown-default"],
)
def test_unknown_options_are_ignored(text: str) -> None:
    """Unknown options and groups parse to the defaults without an error."""
    assert settings.parse_ini(text) == Settings()


@pytest.mark.parametrize(
    ("text", "attr", "expected"),
    [
        (
            "[health_manager]\ncontroller_ip_port_list = a:1 ,  b:2,,\n",
            "controller_ip_port_list",
            ("a:1", "b:2"),
        ),
        ("[health_manager]\ncontroller_ip_port_list =\n", "controller_ip_port_list", ()),
        ("[health_manager]\nheartbeat_key =\n", "heartbeat_key", None),
        ("[DEFAULT]\ndebug = yes\n", "debug", True),
        ("[DEFAULT]\ndebug = OFF\n", "debug", False),
        ("[DEFAULT]\nlog_config_append =\n", "log_config_append", None),
        ("[amphora_agent]\nagent_tls_protocol = TLSv1.3\n", "agent_tls_protocol", "TLSv1.3"),
        ("[amphora_agent]\nnetwork_namespace = amp-1-hx\n", "network_namespace", "amp-1-hx"),
        ("[amphora_agent]\nagent_server_network_dir =\n", "agent_server_network_dir", None),
        (
            "[controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n",
            "loadbalancer_topology",
            "ACTIVE_STANDBY",
        ),
        ("# comment\n; other\n[haproxy_amphora]\nbind_port = 10\n", "bind_port", 10),
        ("[amphora_agent]\nagent_max_connections = 50\n", "agent_max_connections", 50),
        ("[amphora_agent]\nagent_tls_handshake_timeout = 3\n", "agent_tls_handshake_timeout", 3),
    ],
    ids=[
        "list-stripped",
        "empty-list",
        "empty-key",
        "bool-yes",
        "bool-off",
        "empty-path",
        "tls13",
        "namespace",
        "no-network-dir",
        "topology",
        "comments",
        "connection-cap",
        "handshake-timeout",
    ],
)
def test_option_values(text: str, attr: str, expected: object) -> None:
    """Each option parses to its type: lists stripped, booleans in oslo's spellings, empty -> None."""
    assert getattr(settings.parse_ini(text), attr) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[haproxy_amphora]\nbind_port = nine\n",
        "[health_manager]\nheartbeat_interval = 1.5\n",
        "[DEFAULT]\ndebug = maybe\n",
        "[controller_worker]\nloadbalancer_topology = ACTIVE_ACTIVE\n",
        "[amphora_agent]\nagent_tls_protocol = TLSv1.4\n",
        "[amphora_agent]\nadministrative_log_facility = local1\n",
        "[amphora_agent]\nagent_request_read_timeout = 0\n",
        "[amphora_agent]\nagent_max_connections = -1\n",
        "[amphora_agent]\nagent_tls_handshake_timeout = 0\n",
    ],
    ids=["port", "interval", "bool", "topology", "tls", "facility", "read-timeout", "cap", "handshake"],
)
def test_bad_values_raise_invalid_input(text: str) -> None:
    """A value of the wrong type or outside its choices is InvalidInput naming the option."""
    with pytest.raises(InvalidInput) as caught:
        settings.parse_ini(text)
    assert caught.value.message == "Invalid configuration file"
    assert caught.value.details is not None and "]" in caught.value.details


@pytest.mark.parametrize(
    "text",
    [
        "bind_port = 9443\n",
        "[haproxy_amphora\nbind_port = 9443\n",
        "[haproxy_amphora]\njust a line\n",
        "[haproxy_amphora]\nbind_port = 1\n  continued\n[\n",
        "\x00\x01garbage",
    ],
    ids=["no-section", "broken-header", "no-equals", "broken-tail", "binary"],
)
def test_unparsable_files_raise_invalid_input(text: str) -> None:
    """Text that is not INI raises InvalidInput, never a configparser error."""
    with pytest.raises(InvalidInput):
        settings.parse_ini(text)


def test_load_missing_file_raises_invalid_input(tmp_path: Path) -> None:
    """A config file that cannot be read is InvalidInput naming the path."""
    with pytest.raises(InvalidInput) as caught:
        settings.load(tmp_path / "absent.conf")
    assert str(tmp_path) in (caught.value.details or "")


MUTABLE = [
    ("controller_ip_port_list", ("198.51.100.1:5555",)),
    ("heartbeat_interval", 3),
    ("heartbeat_key", "new-key"),
    ("loadbalancer_topology", "ACTIVE_STANDBY"),
    ("debug", True),
    ("log_config_append", Path("/etc/x.conf")),
]
IMMUTABLE = [
    ("bind_port", 1234, "[haproxy_amphora] bind_port"),
    ("amphora_id", "other", "[amphora_agent] amphora_id"),
    ("base_path", Path("/elsewhere"), "[haproxy_amphora] base_path"),
    ("agent_server_cert", Path("/x.pem"), "[amphora_agent] agent_server_cert"),
    ("network_namespace", "other-ns", "[amphora_agent] network_namespace"),
    ("use_syslog", True, "[DEFAULT] use_syslog"),
]


@pytest.mark.parametrize(("attr", "value"), MUTABLE)
def test_mutable_update_takes_mutable_options(attr: str, value: object) -> None:
    """The six mutable options of the reference take their new value and are not reported."""
    new = Settings(**{attr: value})  # type: ignore[arg-type]
    applied, ignored = settings.mutable_update(Settings(), new)
    assert getattr(applied, attr) == value
    assert ignored == []


@pytest.mark.parametrize(("attr", "value", "label"), IMMUTABLE)
def test_mutable_update_keeps_immutable_options(attr: str, value: object, label: str) -> None:
    """A changed immutable option keeps its old value and is reported as needing a restart."""
    old = Settings()
    applied, ignored = settings.mutable_update(old, Settings(**{attr: value}))  # type: ignore[arg-type]
    assert getattr(applied, attr) == getattr(old, attr)
    assert ignored == [label]


def test_mutable_update_from_fixture_files() -> None:
    """The controller's updated file changes exactly the controller list and the heartbeat key."""
    old = settings.load(AGENT / "amphora-agent.conf")
    applied, ignored = settings.mutable_update(old, settings.load(AGENT / "amphora-agent-updated.conf"))
    assert ignored == []
    assert applied.controller_ip_port_list == ("203.0.113.132:5555", "[2001:db8:ff::5]:5555")
    assert applied.heartbeat_key == "fixture-heartbeat-key-rotated"
    assert applied.config_file == old.config_file


def test_live_settings_tell_subscribers() -> None:
    """LiveSettings.replace swaps the current settings and calls every subscriber with them."""
    live = LiveSettings(Settings())
    seen: list[Settings] = []
    live.subscribe(seen.append)
    new = Settings(debug=True)
    live.replace(new)
    assert live.current is new
    assert seen == [new]

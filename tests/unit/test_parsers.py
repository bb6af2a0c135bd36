"""Pure parsers: peer names, controller-rendered haproxy configs, group lines, control bytes, binds."""

from __future__ import annotations

import pytest

from amphora_agent.loadbalancers import haproxy_config
from tests.conftest import FIXTURES

HAPROXY = FIXTURES / "haproxy"
MULTI_LB = "1255f924-18da-44a0-aad7-23512f2c0594"
MULTI_LISTENERS = [
    ("6ecbef6c-ef23-4cbb-ab12-ca7118390d04", "HTTP"),
    ("a89fb3d1-d706-4431-a506-5696d13e932a", "TCP"),
    ("c776a781-ebd5-44e2-b8e4-5ceee6f15a1a", "TERMINATED_HTTPS"),
    ("d20edd98-8c63-4330-a3b7-015d85b2f868", "TCP"),  # HTTPS passthrough renders mode tcp
]


@pytest.mark.parametrize(
    ("amphora_id", "expected"),
    [
        ("amp1", "BdMDzSWGoNCTBh2R50fQ7iACCJ8"),
        ("c1a0e1d2-0000-4000-8000-000000000001", "EO2j26W8x7rxg3Q4yNXOexD7uRs"),
        ("amp-15", "xqM7NCQuX3rO0nveval4-xw2l7o"),  # raw value starts with "-"
        ("a46841f0-96d9-4a6c-bfb7-d874eeaabe30", "ErOJEFT6_YB5mqNf3AQ4Hnke6cM"),  # fixture amp-s
        ("cad520e3-2e33-4593-892d-18fd042fdd61", "AzfEGraNuA-wCPQe2bzAAmaZWVc"),  # fixture amp-a
        ("06e381ee-2adc-4e44-8253-e6a5c4301a38", "lhdI470zS-4h0gT8KgCD9jRK-Hc"),  # fixture amp-b
    ],
)
def test_peer_name_vectors(amphora_id: str, expected: str) -> None:
    """The -L peer name is the controller's url-safe base64 SHA-1, '=' stripped, leading '-' -> 'x'."""
    assert haproxy_config.peer_name(amphora_id) == expected


@pytest.mark.parametrize(
    ("name", "listeners", "stats_socket"),
    [
        (
            "single-http.cfg",
            [("922d8f42-59a5-4a50-b10d-9632277e363e", "HTTP")],
            "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6",
        ),
        (
            "ipv6.cfg",
            [("c90b44fc-bad2-4659-aad0-5ac2db5b4652", "HTTP")],
            "1d3ba11d-afb5-4b1a-baa7-b2698112993d",
        ),
        ("multi-listener.cfg", MULTI_LISTENERS, MULTI_LB),
        ("multi-listener-active-standby.cfg", MULTI_LISTENERS, MULTI_LB),
        (
            "prometheus.cfg",
            [
                ("12aabb74-f964-4687-b62a-91eeb452d5a7", "HTTP"),
                ("fe11efda-23d6-4108-9ad3-fbd73c0af2ea", "HTTP"),
            ],
            "5d65dca3-c361-4fdb-afd8-eb3f8fa927e5",
        ),
    ],
)
def test_parse_fixture_configs(name: str, listeners: list[tuple[str, str]], stats_socket: str) -> None:
    """Every controller config yields its listener ids and types, stats socket and state file."""
    config = haproxy_config.parse_haproxy_config((HAPROXY / name).read_text())
    tenant = [(f.id, f.type) for f in config.frontends if f.id != haproxy_config.PROMETHEUS_FRONTEND]
    assert tenant == listeners
    assert config.listener_ids == [lid for lid, _ in listeners]
    assert config.stats_socket == f"/var/lib/octavia/{stats_socket}.sock"
    assert config.server_state_file == f"/var/lib/octavia/{stats_socket}/servers-state"


def test_every_fixture_config_is_covered() -> None:
    """The table above names every haproxy fixture, so a new fixture cannot go untested."""
    covered = {
        "single-http.cfg",
        "ipv6.cfg",
        "multi-listener.cfg",
        "multi-listener-active-standby.cfg",
        "prometheus.cfg",
    }
    assert {p.name for p in HAPROXY.glob("*.cfg")} == covered


def test_prometheus_internal_frontend_is_parsed_but_not_a_listener() -> None:
    """The internal exporter frontend is a frontend (binds 127.0.0.1:9101) but not a tenant listener."""
    config = haproxy_config.parse_haproxy_config((HAPROXY / "prometheus.cfg").read_text())
    internal = [f for f in config.frontends if f.id == haproxy_config.PROMETHEUS_FRONTEND]
    assert [f.binds for f in internal] == [("127.0.0.1:9101",)]
    assert haproxy_config.PROMETHEUS_FRONTEND not in config.listener_ids


def test_multi_listener_binds_both_families() -> None:
    """Each multi-listener frontend binds the IPv4 VIP and the additional IPv6 VIP."""
    config = haproxy_config.parse_haproxy_config((HAPROXY / "multi-listener.cfg").read_text())
    assert config.frontends[0].binds == ("198.51.100.140:80", "2001:db8:100::140:80")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults\n    mode http\nfrontend a\n    bind :80\n", [("a", "HTTP")]),
        ("defaults\n    mode http\nfrontend a\n    bind :80\n    mode tcp\n", [("a", "TCP")]),
        ("frontend a\n    bind :80\n", [("a", "TCP")]),
        ("frontend a\n    bind :443 ssl crt-list /c/l.pem\n    mode http\n", [("a", "TERMINATED_HTTPS")]),
        ("frontend a\n    bind :443 ssl crt /c/x.pem\n    mode http\n", [("a", "HTTP")]),
        ("frontend a\n    mode http\n    mode tcp\n", [("a", "HTTP")]),
        ("frontend a\n# frontend b\n    mode http\nbackend c\n    mode tcp\n", [("a", "HTTP")]),
        ("frontend a\n    mode http\n  frontend b\n", [("a", "HTTP")]),
        ("listen x\n    mode http\n", []),
        ("", []),
    ],
    ids=[
        "defaults-mode",
        "frontend-mode-wins",
        "tcp-default",
        "crt-list-is-terminated",
        "plain-crt-is-not",
        "first-mode-wins",
        "comments-and-backends",
        "indented-header-is-not-a-section",
        "listen-is-not-a-listener",
        "empty",
    ],
)
def test_frontend_types(text: str, expected: list[tuple[str, str]]) -> None:
    """A frontend's type comes from its first mode (else the defaults), TERMINATED_HTTPS with ssl crt-list."""
    assert [(f.id, f.type) for f in haproxy_config.parse_haproxy_config(text).frontends] == expected


@pytest.mark.parametrize(
    ("text", "socket", "state"),
    [
        ("global\n    stats socket /a.sock mode 0666\n    stats socket /b.sock\n", "/a.sock", None),
        ("global\n    server-state-file /s\n", None, "/s"),
        ("defaults\n    stats socket /not-global.sock\n", None, None),
        ("global\n    stats socket\n", None, None),
    ],
    ids=["first-socket-wins", "state-file", "only-in-global", "no-path"],
)
def test_stats_socket_and_state_file(text: str, socket: str | None, state: str | None) -> None:
    """The first global ``stats socket`` path and the ``server-state-file`` are read from global only."""
    config = haproxy_config.parse_haproxy_config(text)
    assert (config.stats_socket, config.server_state_file) == (socket, state)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("global\n    group haproxy\n    maxconn 10\n", "global\n    maxconn 10\n"),
        ("global\n\tgroup nogroup   \n", "global\n"),
        ("global\n    maxconn 10\n    group haproxy\n\n", "global\n    maxconn 10\n\n"),
        (
            "frontend f\n    acl g hdr(x) -m str group admins\n",
            "frontend f\n    acl g hdr(x) -m str group admins\n",
        ),
        ("backend b\n    group x\n", "backend b\n    group x\n"),
        ("global\r\n    group haproxy\r\n    daemon\r\n", "global\r\n    daemon\r\n"),
        (
            "global\n    group g\ndefaults\n    mode http\nglobal\n    group h\n",
            "global\ndefaults\n    mode http\nglobal\n",
        ),
    ],
    ids=[
        "global-group",
        "tab-and-trailing-space",
        "blank-lines-kept",
        "l7-rule-value-kept",
        "other-section-kept",
        "crlf",
        "every-global",
    ],
)
def test_strip_group_lines(text: str, expected: str) -> None:
    """Only lone ``group <x>`` lines inside ``global`` are dropped; everything else is kept byte for byte."""
    assert haproxy_config.strip_group_lines(text) == expected


@pytest.mark.parametrize("name", sorted(p.name for p in HAPROXY.glob("*.cfg")))
def test_strip_group_lines_keeps_fixture_configs(name: str) -> None:
    """The controller's configs carry no group line, so stripping changes nothing."""
    text = (HAPROXY / name).read_text()
    assert haproxy_config.strip_group_lines(text) == text


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("global\n    maxconn 10\n", None),
        ("a\tb\n", None),
        ("unicode é ✓ is fine\n", None),
        ("", None),
        ("\x00", 1),
        ("one\ntwo\x01\n", 2),
        ("a\rb\n", 1),
        ("a\nb\nc\x1b[0m\n", 3),
        ("\x7f", 1),
        ("x\n\x0c", 2),
        ("x\n\x0b", 2),
    ],
    ids=["clean", "tab", "unicode", "empty", "nul", "soh-line-2", "cr", "escape", "del", "form-feed", "vtab"],
)
def test_find_control_bytes(text: str, line: int | None) -> None:
    """The 1-based line of the first control byte other than tab and newline, or None."""
    assert haproxy_config.find_control_bytes(text) == line


@pytest.mark.parametrize(
    ("binds", "expected"),
    [
        (("198.51.100.10:80",), ["198.51.100.10"]),
        (("2001:db8:101::10:80",), ["2001:db8:101::10"]),
        (("[2001:db8::1]:443",), ["2001:db8::1"]),
        (("ipv6@2001:db8::2:80",), ["2001:db8::2"]),
        (("198.51.100.10:80", "198.51.100.10:443"), ["198.51.100.10"]),
        (("198.51.100.1:80,198.51.100.2:80",), ["198.51.100.1", "198.51.100.2"]),
        (("127.0.0.1:9101", "::1:80"), []),
        ((":80",), []),
    ],
    ids=["ipv4", "ipv6-bare", "ipv6-brackets", "prefix", "dedup", "comma-list", "loopback", "any"],
)
def test_bind_addresses(binds: tuple[str, ...], expected: list[str]) -> None:
    """VIP addresses of bind arguments, unique, loopback and wildcard left out."""
    assert haproxy_config.bind_addresses(binds) == expected

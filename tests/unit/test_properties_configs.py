"""Properties of the text parsers for keepalived (its output, LVS configs), the agent's INI and /proc.

For any text they return data or raise their documented error (``ValueError``, ``InvalidInput``),
never anything else; and what is written in the controller's or the operator's shape parses back to
the values it came from.
"""

from __future__ import annotations

import configparser
import io
import string
from pathlib import Path
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from amphora_agent import info
from amphora_agent.errors import InvalidInput
from amphora_agent.keepalived import config_text
from amphora_agent.settings import OPTIONS, TOPOLOGIES, parse_ini
from tests.unit.strategies import any_text, ipv4, lines_of, ports, uuids, words


# -- keepalived_text.py ----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(any_text)
def test_keepalived_output_is_sorted_without_loss(output: str) -> None:
    """Every non-blank diagnostic of ``keepalived -t`` is either fatal or a known warning."""
    verdict = config_text.classify(output)
    lines = {config_text._TIMESTAMP.sub("", line).strip() for line in output.splitlines()} - {""}
    assert set(verdict.fatal) | set(verdict.warnings) == lines
    assert not set(verdict.fatal) & set(verdict.warnings)
    assert verdict.ok == (not verdict.fatal)


LVS_TOKENS = (
    st.sampled_from(
        [
            "virtual_server",
            "virtual_server_group",
            "real_server",
            "protocol",
            "UDP",
            "SCTP",
            "net_namespace",
            "MISC_CHECK",
            "misc_path",
            "group",
            "{",
            "}",
            "#",
            "53",
            "x",
            "198.51.100.1",
            "2001:db8::1",
        ]
    )
    | words
    | uuids.map(lambda u: f"# Configuration for Member {u}")
)


@settings(max_examples=500, deadline=None)
@given(any_text | lines_of(LVS_TOKENS))
@example("virtual_server 198.51.100.9 53 {\n real_server {\n }\n}\n")
@example("virtual_server_group g {\n notanip 53\n}\n")
@example("real_server 198.51.100.1 x {\n}\n")
@example("}\n}\n")
def test_lvs_configs_parse_or_raise_value_error(text: str) -> None:
    """Any text is an LVS config or a ValueError (the upload answers 400), never another exception."""
    try:
        config = config_text.parse_lvs(text)
        problems = config_text.lvs_problems(text, "amphora-haproxy")
    except ValueError:
        return
    assert all(member.enabled == (member.address is not None) for member in config.members)
    assert problems == [] or config.namespace not in (None, "amphora-haproxy")


members = st.lists(st.tuples(uuids, ipv4, ports, st.booleans()), max_size=4, unique_by=lambda m: m[0])


@settings(max_examples=200, deadline=None)
@given(
    uuids,
    uuids,
    uuids,
    st.lists(st.tuples(ipv4, ports), min_size=1, max_size=3, unique=True),
    st.sampled_from(["UDP", "SCTP"]),
    members,
    st.lists(uuids, max_size=2),
)
def test_rendered_lvs_configs_parse_back(
    lb_id: str,
    listener_id: str,
    pool_id: str,
    vips: list[tuple[str, int]],
    protocol: str,
    servers: list[tuple[str, str, int, bool]],
    disabled: list[str],
) -> None:
    """An LVS config in the controller's shape gives back its ids, VIPs, protocol and members."""
    lines = [
        f"# Configuration for Loadbalancer {lb_id}",
        f"# Configuration for Listener {listener_id}",
        "net_namespace amphora-haproxy",
        "virtual_server_group ipv4-group {",
        *(f"    {address} {port}" for address, port in vips),
        "}",
        "virtual_server group ipv4-group {",
        "    lb_kind NAT",
        f"    protocol {protocol}",
        f"    # Configuration for Pool {pool_id}",
    ]
    for member_id, address, port, checked in servers:
        lines += [f"    # Configuration for Member {member_id}", f"    real_server {address} {port} {{"]
        if checked:
            lines += [
                "        MISC_CHECK {",
                f'            misc_path "/bin/check {address} {port}"',
                "        }",
            ]
        lines.append("    }")
    lines += [f"    # Member {member_id} is disabled" for member_id in disabled]
    lines.append("}")
    config = config_text.parse_lvs("\n".join(lines) + "\n")
    assert (config.loadbalancer_id, config.listener_id, config.pool_id) == (lb_id, listener_id, pool_id)
    assert config.namespace == "amphora-haproxy"
    assert list(config.vips) == vips and config.protocols == (protocol,)
    enabled = [(m.member_id, m.address, m.port, m.check) for m in config.members if m.enabled]
    assert enabled == [(i, a, p, "MISC_CHECK" if c else None) for i, a, p, c in servers]
    assert [m.member_id for m in config.members if not m.enabled] == disabled
    assert config.health_monitor == any(c for *_, c in servers)


# -- parse_ini -------------------------------------------------------------------------------
INI_TOKENS = (
    st.sampled_from(
        [
            "[DEFAULT]",
            "[amphora_agent]",
            "[health_manager]",
            "[controller_worker]",
            "[haproxy_amphora]",
            "=",
            ":",
            "debug",
            "True",
            "bind_port",
            "heartbeat_interval",
            "loadbalancer_topology",
            "SINGLE",
            "%(x)s",
            "[",
        ]
    )
    | words
)


@settings(max_examples=400, deadline=None)
@given(any_text | lines_of(INI_TOKENS))
@example("[DEFAULT]\ndebug = maybe\n")
@example("debug = True\n")
@example("[health_manager]\nheartbeat_interval = 1e3\n")
@example("[DEFAULT]\nx = %(y)s\n")
@example("[a]\n[a]\nk=1\nk=2\n")
def test_ini_text_is_settings_or_a_400(text: str) -> None:
    """Any INI text (PUT /1.0/config) is Settings or InvalidInput: a bad file changes nothing."""
    try:
        parsed = parse_ini(text)
    except InvalidInput as exc:
        assert exc.message == "Invalid configuration file"
        return
    assert parsed.loadbalancer_topology in TOPOLOGIES


ini_values = {
    "debug": st.booleans(),
    "heartbeat_interval": st.integers(1, 3600),
    "heartbeat_key": st.text(string.ascii_letters + string.digits, min_size=1, max_size=20),
    "loadbalancer_topology": st.sampled_from(TOPOLOGIES),
    "controller_ip_port_list": st.lists(
        st.tuples(ipv4, ports).map(lambda a: f"{a[0]}:{a[1]}"), max_size=3
    ).map(tuple),
    "bind_port": ports,
    "amphora_id": uuids,
    "base_path": st.lists(
        st.text(string.ascii_lowercase, min_size=1, max_size=8), min_size=1, max_size=3
    ).map(lambda parts: Path("/" + "/".join(parts))),
}


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional=ini_values))
def test_rendered_ini_files_parse_back(values: dict[str, Any]) -> None:
    """An INI file written with the options' sections and names gives back exactly those values."""
    assume(values)
    parser = configparser.ConfigParser(interpolation=None)
    for attr, value in values.items():
        (section, name), _ = next((key, o) for key, o in OPTIONS.items() if o[0] == attr)
        text = ", ".join(value) if isinstance(value, tuple) else str(value)
        if section == "DEFAULT":
            parser["DEFAULT"][name] = text
        else:
            parser[section] = {**(parser[section] if parser.has_section(section) else {}), name: text}
    out = io.StringIO()
    parser.write(out)
    parsed = parse_ini(out.getvalue())
    for attr, value in values.items():
        assert getattr(parsed, attr) == value, attr


# -- info.py: /proc files ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["MemTotal", "MemFree", "Cached", "Slab", "Other"]),
        st.integers(0, 2**63),
    )
)
def test_meminfo_parses_back(values: dict[str, int]) -> None:
    """/proc/meminfo lines give back their kB values under the existing agent's names (0 when absent)."""
    text = "".join(f"{name}:   {value} kB\n" for name, value in values.items())
    memory = info.parse_meminfo(text)
    assert memory["total"] == values.get("MemTotal", 0) and memory["slab"] == values.get("Slab", 0)

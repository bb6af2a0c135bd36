"""Properties of the edge validators and the network request parsers: any input is a value or a 400.

Whatever the controller (or anyone holding a client certificate) sends, the validators answer with
the typed ``InvalidInput`` (a 400) or a value that is safe to use: an id or file name that stays one
path segment inside the agent's folders, a plug or rule set with parsed addresses. Never another
exception (a 500).
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import PurePosixPath
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from amphora_agent import validation
from amphora_agent.errors import InvalidInput
from amphora_agent.network import nftables, plans

ID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{0,63}")
hostile_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["/", ".", "-", "\0", "\n", "%"]),
    max_size=80,
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)


def _is_safe_segment(value: str) -> bool:
    """One path segment that cannot leave its folder or pass for a command-line option."""
    return (
        PurePosixPath(value).name == value
        and value not in (".", "..")
        and ".." not in value
        and not value.startswith(("-", "."))
        and value.isascii()
        and value.isprintable()
    )


@settings(max_examples=500, deadline=None)
@given(hostile_text | st.from_regex(ID, fullmatch=True))
@example("../etc/passwd")
@example("%2e%2e")
@example("-rf")
@example("a" * 64)
@example("a" * 65)
def test_object_id_accepts_exactly_the_uuid_like(value: str) -> None:
    """An id is accepted exactly when it is hex and dashes (1-64, no leading dash); accepted ids are safe."""
    try:
        accepted = validation.object_id(value, "loadbalancer") == value
    except InvalidInput as exc:
        assert exc.message == "Invalid request"
        assert len(exc.details or "") < 200  # a huge id is quoted in part
        accepted = False
    assert accepted == bool(ID.fullmatch(value))
    if accepted:
        assert _is_safe_segment(value)


@settings(max_examples=500, deadline=None)
@given(hostile_text | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}\.pem", fullmatch=True))
@example("..pem")
@example("a..pem")
@example(".pem")
@example("-x.pem")
@example("a/b.pem")
@example("a.pem\n")
def test_pem_names_accepted_are_one_safe_segment(value: str) -> None:
    """A tenant PEM name is accepted only as one safe file name ending in ``.pem``."""
    try:
        validation.pem_name(value)
    except InvalidInput as exc:
        assert exc.message == "Filename has wrong format"
        return
    assert value.endswith(".pem") and _is_safe_segment(value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(validation.ACTIONS), st.data())
def test_actions_are_case_insensitive(action: str, data: st.DataObject) -> None:
    """Any capitalisation of start, stop and reload is that action."""
    spelled = "".join(c.upper() if data.draw(st.booleans()) else c for c in action)
    assert validation.action(spelled) == action


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_other_actions_are_refused(value: str) -> None:
    """Anything but the three actions is a 400 naming it."""
    try:
        assert validation.action(value) in validation.ACTIONS
    except InvalidInput as exc:
        assert exc.message == "Invalid Request"


def _json_bodies() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary JSON, and objects that look like plug bodies with hostile values."""
    plug_like = st.fixed_dictionaries(
        {},
        optional={
            "subnet_cidr": json_values | st.just("198.51.100.0/24"),
            "gateway": json_values | st.just("198.51.100.1"),
            "mac_address": json_values | st.just("fa:16:3e:00:00:01"),
            "vrrp_ip": json_values | st.just("198.51.100.5"),
            "mtu": json_values,
            "is_sriov": json_values,
            "host_routes": json_values,
            "additional_vips": json_values,
            "fixed_ips": json_values,
            "vip_net_info": json_values,
        },
    )
    return (
        st.binary(max_size=300)
        | json_values.map(lambda v: json.dumps(v).encode())
        | plug_like.map(lambda v: json.dumps(v).encode())
    )


def _typed(parse: Any, *args: Any) -> Any:
    """The parsed value, or None for the typed 400 (anything else escapes and fails the test)."""
    try:
        return parse(*args)
    except InvalidInput as exc:
        assert exc.message
        return None


@settings(max_examples=500, deadline=None)
@given(hostile_text | st.ip_addresses().map(str), _json_bodies())
@example("198.51.100.10", b"[" * 100_000)
@example("198.51.100.10", b'{"a":' * 50_000)
@example("198.51.100.10", b"\xff")
def test_plug_vip_bodies_are_a_plug_or_a_400(vip: str, body: bytes) -> None:
    """Any VIP and body: a plug whose addresses parsed, or InvalidInput."""
    plug = _typed(plans.parse_plug_vip, vip, body)
    if plug is not None:
        assert plug.vips[0].address == ipaddress.ip_address(vip)
        assert all(subnet.address in subnet.network for subnet in plug.vips)
        assert plans.MAC.fullmatch(plug.mac)


@settings(max_examples=500, deadline=None)
@given(_json_bodies())
@example(b"[" * 100_000)
@example(b'{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": 1}]}')
@example(b'{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": []}}')
def test_plug_network_bodies_are_a_plug_or_a_400(body: bytes) -> None:
    """Any body: a network plug whose fixed IPs lie in their subnets, or InvalidInput."""
    plug = _typed(plans.parse_plug_network, body)
    if plug is not None:
        assert all(subnet.address in subnet.network for subnet in plug.fixed_ips)


@st.composite
def _subnets(draw: st.DrawFn, version: int) -> tuple[str, str, str]:
    """(address, strict cidr, gateway) of one subnet."""
    prefix = draw(st.integers(min_value=8 if version == 4 else 48, max_value=30 if version == 4 else 126))
    address = draw(ipv4 if version == 4 else ipv6)
    net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    hosts = net.num_addresses
    pick = draw(st.integers(min_value=1, max_value=min(hosts - 2, 10_000)))
    gateway = draw(st.integers(min_value=1, max_value=min(hosts - 2, 10_000)))
    return str(net[pick]), str(net), str(net[gateway])


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([4, 6]).flatmap(_subnets),
    st.integers(min_value=68, max_value=65535) | st.none(),
    st.booleans(),
    st.from_regex(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", fullmatch=True),
)
def test_valid_plug_vip_bodies_round_trip(
    subnet: tuple[str, str, str], mtu: int | None, sriov: bool, mac: str
) -> None:
    """A well-formed plug-VIP body parses to exactly its values."""
    vip, cidr, gateway = subnet
    body = {
        "subnet_cidr": cidr,
        "gateway": gateway,
        "mac_address": mac.upper(),
        "mtu": mtu,
        "is_sriov": sriov,
    }
    plug = plans.parse_plug_vip(vip, json.dumps(body).encode())
    assert plug.mac == mac
    assert plug.vips[0].address == ipaddress.ip_address(vip)
    assert plug.vips[0].network == ipaddress.ip_network(cidr)
    assert plug.vips[0].gateway == ipaddress.ip_address(gateway)
    assert (plug.mtu, plug.is_sriov, plug.vrrp_ip) == (mtu, sriov, None)


networks = st.tuples(ipv4, st.integers(0, 32)) | st.tuples(ipv6, st.integers(0, 128))
rules = st.fixed_dictionaries(
    {
        "protocol": st.sampled_from(nftables.PROTOCOLS),
        "cidr": st.none() | networks.map(lambda n: f"{n[0]}/{n[1]}"),
        "port": st.integers(min_value=1, max_value=65535),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(rules, max_size=8))
def test_valid_rules_round_trip(items: list[dict[str, Any]]) -> None:
    """The controller's rule list parses to the same rules, each rendering one nft statement."""
    parsed = nftables.parse_rules(json.dumps(items).encode())
    assert [(r.protocol, r.port) for r in parsed] == [(i["protocol"], i["port"]) for i in items]
    for rule, item in zip(parsed, items, strict=True):
        cidr = item["cidr"]
        expected = None if cidr is None else ipaddress.ip_network(cidr, strict=False).compressed
        assert rule.cidr == expected
        assert rule.render().endswith("accept") and "\n" not in rule.render()


@settings(max_examples=300, deadline=None)
@given(
    _json_bodies()
    | st.lists(st.dictionaries(st.text(max_size=8), json_values)).map(json.dumps).map(str.encode)
)
@example(b"[" * 100_000)
@example(b'[{"protocol": "TCP", "cidr": null, "port": 80.5}]')
@example(b'[{"protocol": "TCP", "cidr": "300.0.0.0/8", "port": 80}]')
def test_rules_bodies_are_rules_or_a_400(body: bytes) -> None:
    """Any body: rules that render, or the typed 400 ``Invalid rules information``."""
    parsed = _typed(nftables.parse_rules, body)
    for rule in parsed or []:
        assert rule.protocol in nftables.PROTOCOLS and 1 <= rule.port <= 65535
        rule.render()

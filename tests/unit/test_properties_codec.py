"""Properties of the heartbeat codec: round trips, and any datagram decodes or is a typed error."""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amphora_agent.health import codec

KEY = "fixture-heartbeat-key"
keys = st.text(min_size=1, max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
counters = st.integers(min_value=0, max_value=2**53)
listener = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["OPEN", "FULL", "DOWN"]),
        "stats": st.fixed_dictionaries({name: counters for name in codec.STAT_NAMES}),
    }
)
pool = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["UP", "DOWN", "NO_MONITOR"]),
        "members": st.dictionaries(st.uuids().map(str), st.sampled_from(["UP", "DOWN", "DRAIN"]), max_size=4),
    }
)
messages = st.fixed_dictionaries(
    {
        "id": st.uuids().map(str),
        "seq": st.integers(min_value=0, max_value=2**63),
        "listeners": st.dictionaries(st.uuids().map(str), listener, max_size=4),
        "pools": st.dictionaries(st.uuids().map(str), pool, max_size=4),
        "ver": st.sampled_from(codec.MESSAGE_VERSIONS),
    }
)


def signed(payload: bytes, key: str = KEY) -> bytes:
    """``payload`` with a valid hex MAC: only the checks after the MAC are left to reject it."""
    return payload + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest().encode()


def outcome(datagram: bytes, key: str = KEY) -> dict[str, Any] | None:
    """The decoded message, or None when it was rejected with the typed error (anything else escapes)."""
    try:
        return dict(codec.decode(datagram, key))
    except codec.HeartbeatRejected as exc:
        assert exc.message  # the reason is always said
        return None


@settings(max_examples=200, deadline=None)
@given(messages, keys)
def test_valid_messages_round_trip(message: dict[str, Any], key: str) -> None:
    """Any valid v2/v3 message, under any key, decodes to itself."""
    assert codec.decode(codec.wrap(codec.encode(message), key), key) == message


@settings(max_examples=200, deadline=None)
@given(json_objects, keys)
def test_any_json_object_unwraps_to_itself(message: dict[str, Any], key: str) -> None:
    """The envelope carries any JSON object unchanged; ``validate`` alone judges its schema."""
    datagram = codec.wrap(json.dumps(message).encode(), key)
    assert codec.unwrap(datagram, key) == message
    outcome(datagram, key)  # a schema violation is a typed error, never another exception


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
@example(b"")
@example(b"x" * (codec.MIN_PAYLOAD + codec.RAW_MAC))
def test_arbitrary_bytes_are_a_typed_error(datagram: bytes) -> None:
    """Bytes from anyone on the management network never decode and never raise another exception."""
    assert outcome(datagram) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
@example(zlib.compress(b"[" * 100_000))  # nesting deeper than the JSON parser's recursion limit
@example(zlib.compress(b'{"a": ' * 50_000))
@example(zlib.compress(b"\xff\xfe{}"))
@example(zlib.compress(b"NaN"))
def test_signed_arbitrary_payloads_are_a_typed_error(payload: bytes) -> None:
    """With a valid MAC (a key holder's datagram) any payload still ends in a message or the typed error."""
    outcome(signed(payload))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_signed_arbitrary_json_is_decoded_or_a_typed_error(value: Any) -> None:
    """Any signed JSON value is accepted only when it is a valid message, else rejected with the reason."""
    decoded = outcome(signed(zlib.compress(json.dumps(value).encode())))
    assert decoded is None or decoded == value


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_any_changed_byte_is_rejected(message: dict[str, Any], data: st.DataObject) -> None:
    """Flipping any bit of a datagram (payload or MAC) makes it rejected."""
    datagram = bytearray(codec.wrap(codec.encode(message), KEY))
    index = data.draw(st.integers(min_value=0, max_value=len(datagram) - 1))
    datagram[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    assert outcome(bytes(datagram)) is None


@settings(max_examples=100, deadline=None)
@given(messages, st.data())
def test_any_truncation_is_rejected(message: dict[str, Any], data: st.DataObject) -> None:
    """A datagram cut short anywhere (a lost fragment) is rejected."""
    datagram = codec.wrap(codec.encode(message), KEY)
    cut = data.draw(st.integers(min_value=0, max_value=len(datagram) - 1))
    assert outcome(datagram[:cut]) is None


@settings(max_examples=100, deadline=None)
@given(messages, keys, keys)
def test_another_key_is_rejected(message: dict[str, Any], key: str, other: str) -> None:
    """A datagram signed with one key is never accepted under another."""
    if key == other:
        return
    assert outcome(codec.wrap(codec.encode(message), key), other) is None


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_rejected(depth: int) -> None:
    """A signed message nested past the parser's recursion limit is rejected, not a RecursionError."""
    assert outcome(signed(zlib.compress(b"[" * depth + b"]" * depth))) is None

"""The heartbeat envelope: golden vectors both ways, and every datagram the controller must drop."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from amphora_agent.health import codec
from tests.conftest import FIXTURES

HEARTBEAT = FIXTURES / "heartbeat"
KEY = (HEARTBEAT / "key.txt").read_text() if HEARTBEAT.is_dir() else "fixture-heartbeat-key"

# The reference's own test vector (section 10.5): CPython zlib level 9, key "insecure".
REF_JSON = b'{"id": "c1a0e1d2-0000-4000-8000-000000000001", "seq": 0, "listeners": {}, "pools": {}, "ver": 3}'
REF_COMPRESSED = bytes.fromhex(
    "78daab56ca4c51b252504a364c3448354c31d23500025d13106101220c10c050494741a938b510a8dc00c8cac92c2e49cd4b"
    "2d2a06f2ab6b810205f9f939704e596a1190695c0b0066a918d1"
)
REF_MAC = b"77518a85601cf0c859b57a8f4f671286c151c66ac29e78bbb36642dc5ef2eece"


def _message(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": "a46841f0-96d9-4a6c-bfb7-d874eeaabe30",
        "seq": 7,
        "listeners": {
            "l1": {"status": "OPEN", "stats": {"tx": 1, "rx": 2, "conns": 3, "totconns": 4, "ereq": 0}}
        },
        "pools": {"p1:l1": {"status": "UP", "members": {"m1": "UP", "m2": "DOWN"}}},
        "ver": 3,
    }
    message.update(changes)
    return message


def _signed(payload: bytes, key: str = KEY) -> bytes:
    return payload + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest().encode()


def test_reference_vector_wraps_to_the_documented_bytes() -> None:
    """The documented message and key give the documented compressed bytes, MAC and 140-byte length."""
    datagram = codec.wrap(REF_JSON, "insecure")
    assert datagram == REF_COMPRESSED + REF_MAC
    assert len(datagram) == 140
    assert codec.encode(json.loads(REF_JSON)) == REF_JSON


@pytest.mark.parametrize("beat", [1, 2])
def test_fixture_message_wraps_to_the_fixture_envelope(beat: int) -> None:
    """message-N.json signed with key.txt is byte for byte envelope-N.bin (zlib 1.2.13)."""
    message = (HEARTBEAT / f"message-{beat}.json").read_bytes()
    assert codec.wrap(message, KEY) == (HEARTBEAT / f"envelope-{beat}.bin").read_bytes()


@pytest.mark.parametrize("beat", [1, 2])
def test_fixture_envelope_decodes_to_the_fixture_message(beat: int) -> None:
    """envelope-N.bin decodes to message-N.json, and re-encodes to the same JSON bytes."""
    decoded = codec.decode((HEARTBEAT / f"envelope-{beat}.bin").read_bytes(), KEY)
    expected = (HEARTBEAT / f"message-{beat}.json").read_bytes()
    assert decoded == json.loads(expected)
    assert codec.encode(decoded) == expected


def test_legacy_raw_digest_is_accepted() -> None:
    """A pre-2018 amphora appended the raw 32-byte digest: the controller still accepts it."""
    payload = zlib.compress(codec.encode(_message()), 9)
    datagram = payload + hmac.new(KEY.encode(), payload, hashlib.sha256).digest()
    assert codec.decode(datagram, KEY) == _message()


@functools.cache
def _bomb() -> bytes:
    """16 MiB of JSON in about 16 KiB: four times the decompression bound."""
    return _signed(zlib.compress(b'{"id": "' + b"a" * (16 << 20) + b'"}', 9))


@pytest.mark.parametrize(
    ("datagram", "key", "reason"),
    [
        pytest.param(codec.wrap(codec.encode(_message()), KEY), "another-key", "digest", id="wrong-key"),
        pytest.param(codec.wrap(codec.encode(_message()), KEY)[:20], KEY, "Truncated", id="truncated-short"),
        pytest.param(codec.wrap(codec.encode(_message()), KEY)[:-1], KEY, "digest", id="truncated-by-one"),
        pytest.param(codec.wrap(codec.encode(_message()), KEY)[:-64], KEY, "digest", id="digest-cut-off"),
        pytest.param(codec.wrap(codec.encode(_message()), KEY)[:-1] + b"0", KEY, "digest", id="bad-digest"),
        pytest.param(
            b"\x00" + codec.wrap(codec.encode(_message()), KEY)[1:], KEY, "digest", id="altered-payload"
        ),
        pytest.param(b"x" * (codec.MAX_DATAGRAM + 1), KEY, "Oversized", id="oversized-datagram"),
        pytest.param(_bomb(), KEY, "Oversized", id="decompression-bomb"),
        pytest.param(_signed(zlib.compress(b"{}" * 10)[:-3]), KEY, "truncated", id="signed-truncated-zlib"),
        pytest.param(_signed(b"not zlib at all"), KEY, "zlib", id="signed-not-zlib"),
        pytest.param(_signed(zlib.compress(b"{}") + b"junk"), KEY, "after the end", id="trailing-data"),
        pytest.param(_signed(zlib.compress(b"[1, 2]")), KEY, "object", id="not-an-object"),
        pytest.param(_signed(zlib.compress(b"\xff\xfe")), KEY, "JSON", id="not-json"),
    ],
)
def test_rejected_datagrams(datagram: bytes, key: str, reason: str) -> None:
    """Wrong key, truncation, bad digest, oversize and bombs raise HeartbeatRejected, saying why."""
    with pytest.raises(codec.HeartbeatRejected) as caught:
        codec.decode(datagram, key)
    assert reason in str(caught.value)


def test_bomb_is_small_on_the_wire() -> None:
    """The bomb above fits in one datagram: only the decompression bound stops it."""
    assert len(_bomb()) <= codec.MAX_DATAGRAM // 2


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"ver": 1}, "ver"),
        ({"ver": None}, "ver"),
        ({"listeners": []}, "listeners"),
        ({"pools": None}, "pools"),
        ({"listeners": {"l1": {"stats": {}}}}, "listeners.l1"),
        ({"listeners": {"l1": {"status": "OPEN"}}}, "listeners.l1"),
        (
            {
                "listeners": {
                    "l1": {
                        "status": "OPEN",
                        "stats": {"tx": -1, "rx": 0, "conns": 0, "totconns": 0, "ereq": 0},
                    }
                }
            },
            "listeners.l1.stats.tx",
        ),
        ({"listeners": {"l1": {"status": "OPEN", "stats": {"tx": 1}}}}, "listeners.l1.stats.rx"),
        ({"pools": {"p": {"members": {}}}}, "pools.p"),
        ({"pools": {"p": {"status": "UP", "members": {"m": 1}}}}, "pools.p.members"),
    ],
)
def test_schema_violations_are_rejected(changes: dict[str, Any], where: str) -> None:
    """A signed message that breaks the v3 schema is rejected, naming the field."""
    datagram = codec.wrap(codec.encode(_message(**changes)), KEY)
    with pytest.raises(codec.HeartbeatRejected) as caught:
        codec.decode(datagram, KEY)
    assert where in str(caught.value)


def test_version_2_messages_are_accepted() -> None:
    """Version 2 (absolute counters, same layout) still decodes."""
    assert codec.decode(codec.wrap(codec.encode(_message(ver=2)), KEY), KEY)["ver"] == 2


def test_fixture_key_is_the_documented_one(fixtures_dir: Path) -> None:
    """key.txt holds the 21-byte key the fixture README names."""
    assert (fixtures_dir / "heartbeat" / "key.txt").read_bytes() == b"fixture-heartbeat-key"

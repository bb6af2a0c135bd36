"""The heartbeat wire format, both sides (pure): zlib-compressed JSON, then the hex HMAC-SHA256.

``wrap`` is what the amphora sends; ``unwrap`` and ``validate`` are what the controller's health
manager does on arrival, with limits a datagram from anyone on the management network must respect:
the size is bounded before anything else, the MAC is checked before anything is decompressed, and
decompression stops at a bound (no decompression bomb).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Mapping
from typing import Any, TypeGuard

from amphora_agent.errors import InvalidInput

ZLIB_LEVEL = 9
HEX_MAC = 64  # the current form: lowercase hex digest appended
RAW_MAC = 32  # the legacy form: raw digest appended (amphorae built before 2018)
MAX_DATAGRAM = 65535  # the controller reads at most 64 KiB per datagram
MAX_JSON = 4 << 20  # bound on the decompressed message
MIN_PAYLOAD = 8  # a zlib stream is never shorter: 2-byte header, deflate data, Adler-32
MESSAGE_VERSIONS = (2, 3)  # one combined config per LB, top-level pools (3: stats are deltas)
STAT_NAMES = ("tx", "rx", "conns", "totconns", "ereq")


class HeartbeatRejected(InvalidInput):
    """A datagram the controller would drop; ``message`` says which check failed."""


def encode(message: Mapping[str, Any]) -> bytes:
    """The JSON bytes of a message, laid out as the existing agent lays them out."""
    return json.dumps(message).encode("utf-8")


def hex_mac(payload: bytes, key: str) -> bytes:
    """The lowercase hex HMAC-SHA256 of ``payload`` keyed by the UTF-8 ``key`` (64 ASCII bytes)."""
    return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest().encode("ascii")


def wrap(message_json: bytes, key: str) -> bytes:
    """The datagram: ``zlib.compress(json, 9)`` followed by its hex HMAC."""
    payload = zlib.compress(message_json, ZLIB_LEVEL)
    return payload + hex_mac(payload, key)


def _authentic_payload(datagram: bytes, key: str) -> bytes | None:
    secret = key.encode("utf-8")
    for size in (HEX_MAC, RAW_MAC):
        payload, mac = datagram[:-size], datagram[-size:]
        digest = hmac.new(secret, payload, hashlib.sha256)
        expected = digest.hexdigest().encode("ascii") if size == HEX_MAC else digest.digest()
        if len(payload) >= MIN_PAYLOAD and hmac.compare_digest(mac, expected):
            return payload
    return None


def _inflate(payload: bytes, max_json: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, max_json + 1)
    except zlib.error as exc:
        raise HeartbeatRejected("Undecodable heartbeat", f"zlib: {exc}") from exc
    if len(data) > max_json or inflater.unconsumed_tail:
        raise HeartbeatRejected("Oversized heartbeat", f"the message inflates beyond {max_json} bytes")
    if not inflater.eof:
        raise HeartbeatRejected("Undecodable heartbeat", "the zlib stream is truncated")
    if inflater.unused_data:
        raise HeartbeatRejected("Undecodable heartbeat", "data after the end of the zlib stream")
    return data


def unwrap(
    datagram: bytes, key: str, *, max_size: int = MAX_DATAGRAM, max_json: int = MAX_JSON
) -> dict[str, Any]:
    """Check the MAC (hex, then the legacy raw form), inflate within bounds and parse the JSON object."""
    if len(datagram) > max_size:
        raise HeartbeatRejected("Oversized heartbeat", f"{len(datagram)} bytes, at most {max_size}")
    if len(datagram) < MIN_PAYLOAD + RAW_MAC:
        raise HeartbeatRejected("Truncated heartbeat", f"only {len(datagram)} bytes")
    payload = _authentic_payload(datagram, key)
    if payload is None:
        raise HeartbeatRejected("Bad heartbeat digest", "the HMAC does not match: wrong key or altered data")
    data = _inflate(payload, max_json)
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartbeatRejected("Undecodable heartbeat", f"not JSON: {exc}") from exc
    except RecursionError as exc:  # nesting deeper than the parser's recursion limit
        raise HeartbeatRejected("Undecodable heartbeat", "the JSON is nested too deeply") from exc
    if not isinstance(message, dict):
        raise HeartbeatRejected("Invalid heartbeat", "the message is not a JSON object")
    return message


def _fail(where: str, what: str) -> HeartbeatRejected:
    return HeartbeatRejected("Invalid heartbeat", f"{where}: {what}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_listener(lid: str, listener: object) -> None:
    if not isinstance(listener, dict) or not isinstance(listener.get("status"), str):
        raise _fail(f"listeners.{lid}", "needs a string status")
    stats = listener.get("stats")
    if not isinstance(stats, dict):
        raise _fail(f"listeners.{lid}", "needs stats")
    for name in STAT_NAMES:
        value = stats.get(name)
        if not _is_int(value) or value < 0:
            raise _fail(f"listeners.{lid}.stats.{name}", f"not a counter: {value!r}")


def _check_pool(key: str, pool: object) -> None:
    if not isinstance(pool, dict) or not isinstance(pool.get("status"), str):
        raise _fail(f"pools.{key}", "needs a string status")
    members = pool.get("members")
    if not isinstance(members, dict) or not all(isinstance(s, str) for s in members.values()):
        raise _fail(f"pools.{key}.members", "needs a map of member id to status")


def validate(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check the version 2/3 schema the health manager reads; return the message unchanged."""
    if not isinstance(message.get("id"), str) or not message["id"]:
        raise _fail("id", "needs the amphora id")
    if not _is_int(message.get("seq")):
        raise _fail("seq", "needs an integer")
    if message.get("ver") not in MESSAGE_VERSIONS:
        raise _fail("ver", f"unsupported message version {message.get('ver')!r}")
    listeners, pools = message.get("listeners"), message.get("pools")
    if not isinstance(listeners, dict) or not isinstance(pools, dict):
        raise _fail("listeners/pools", "need JSON objects")
    for lid, listener in listeners.items():
        _check_listener(lid, listener)
    for key, pool in pools.items():
        _check_pool(key, pool)
    return message


def decode(datagram: bytes, key: str) -> Mapping[str, Any]:
    """``unwrap`` then ``validate``: the message the health manager would accept, or HeartbeatRejected."""
    return validate(unwrap(datagram, key))

"""Pure text -> data parsers for what the controller renders and what haproxy answers."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

PROMETHEUS_FRONTEND = "prometheus-exporter-internal-endpoint"
_SECTION = re.compile(
    r"^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|"
    r"program|http-errors|ring|cache|mailers)(?:\s+(\S+))?\s*$"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_BLANKS = re.compile(r"[ \t]+")  # haproxy's only separators (not every Unicode space)
_ATOI = re.compile(r"\s*([+-]?\d+)")
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Frontend:
    """A listener as the stored config declares it."""

    id: str
    type: str  # HTTP, TCP or TERMINATED_HTTPS
    binds: tuple[str, ...]


@dataclass(frozen=True)
class HaproxyConfig:
    """What the agent needs from a stored haproxy.cfg."""

    frontends: tuple[Frontend, ...]
    stats_socket: str | None
    server_state_file: str | None

    @property
    def listener_ids(self) -> list[str]:
        """Tenant listener ids (the internal Prometheus endpoint is not a listener)."""
        return [f.id for f in self.frontends if f.id != PROMETHEUS_FRONTEND]


class Word(NamedTuple):
    """One argument as haproxy reads it: quotes and escapes resolved; ``expands`` when it holds a
    ``$`` inside double quotes (haproxy puts an environment variable there)."""

    text: str
    expands: bool = False


_FIRST = re.compile(r"[ \t]*([^ \t#\r\n]*)")
SECTIONS = frozenset(("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers"))
SECTIONS |= {"userlist", "program", "http-errors", "ring", "cache", "mailers"}


def keyword(line: str) -> str | None:
    """The first word of a line without quotes or escapes ("" for a blank or comment line), fast; None
    when it has some: only ``words`` can tell then."""
    if "\\" in line or '"' in line or "'" in line:
        return None
    match = _FIRST.match(line)
    return match[1] if match else ""


def words(line: str) -> list[Word]:
    """Cut a config line into arguments exactly as haproxy 2.6 does (its manual, 2.2): backslash
    escapes (``\\xNN`` too), weak ``"..."`` and strong ``'...'`` quoting, ``#`` comments."""
    line = line.rstrip("\r\n")
    if "\\" not in line and '"' not in line and "'" not in line:  # the common case, at C speed
        return [Word(text) for text in _BLANKS.split(line.split("#", 1)[0].strip(" \t")) if text]
    out: list[Word] = []
    chars: list[str] = []
    started = expands = False
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote == "'":
            quote = "" if c == "'" else quote
            chars += [] if c == "'" else [c]
            i += 1
            continue
        if c == "\\" and i + 1 < len(line):
            nxt, i, started = line[i + 1], i + 2, True
            if nxt == "x" and _HEX2.fullmatch(line[i : i + 2]):
                nxt, i = chr(int(line[i : i + 2], 16)), i + 2
            chars.append(_ESCAPES.get(nxt, nxt))
            continue
        i += 1
        if quote == '"':
            quote = "" if c == '"' else quote
            expands = expands or c == "$"
            chars += [] if c == '"' else [c]
        elif c in " \t":
            if started:
                out.append(Word("".join(chars), expands))
            chars, started, expands = [], False, False
        elif c == "#":
            break
        elif c in "\"'":
            quote, started = c, True
        else:
            chars.append(c)
            started = True
    if started:
        out.append(Word("".join(chars), expands))
    return out


def atoi(text: str) -> int:
    """C's ``atoi`` as haproxy uses it for numbers: the leading integer, 0 when there is none."""
    match = _ATOI.match(text)
    return int(match[1]) if match else 0


def ssl_session_cache(lines: Iterable[str]) -> int:
    """Entries of the SSL session cache haproxy allocates for this config (0: none is allocated).

    The last ``tune.ssl.cachesize`` of ``global`` (20000 by default), only when a ``bind`` line
    terminates TLS: haproxy allocates the cache for TLS listeners only.
    """
    entries, tls_bind, section = 20000, False, ""
    for raw in lines:
        first = keyword(raw)
        if first is not None and first not in _CACHE_KEYWORDS:
            continue
        args = words(raw)
        if not args:
            continue
        if _SECTION.match(args[0].text) and not raw[:1].isspace():
            section = args[0].text
        elif section == "global" and args[0].text == "tune.ssl.cachesize" and len(args) > 1:
            entries = atoi(args[1].text)
        elif args[0].text == "bind" and any(arg.text == "ssl" for arg in args[2:]):
            tls_bind = True
    return entries if tls_bind and 0 < entries <= INT_MAX else 0


_CACHE_KEYWORDS = SECTIONS | {"tune.ssl.cachesize", "bind"}


def peer_name(amphora_id: str) -> str:
    """haproxy's ``-L`` name for an amphora, computed exactly as the controller's template does."""
    digest = hashlib.sha1(amphora_id.encode("utf-8")).digest()
    name = base64.b64encode(digest, altchars=b"_-").decode()
    if name.startswith("-"):
        name = "x" + name[1:]
    return name.rstrip("=")


def find_control_bytes(text: str) -> int | None:
    """1-based line number of the first control byte other than tab and newline (CR counts)."""
    match = _CONTROL.search(text)
    if match is None:
        return None
    return text.count("\n", 0, match.start()) + 1


def strip_group_lines(text: str) -> str:
    """Drop ``group`` lines from ``global``: the group comes from the image's user-group file.

    Line-anchored, unlike the old agent's regex, so an L7 rule value containing ``group`` is kept.
    """
    return GroupLines().strip(text)


class GroupLines:
    """``strip_group_lines`` over a config read in blocks of whole lines (a streamed upload)."""

    def __init__(self) -> None:
        self.section = ""

    def strip(self, text: str, continued: bool = False) -> str:
        """``text`` without its ``global`` group lines; ``continued``: it starts inside a line."""
        out: list[str] = []
        for line in text.splitlines(keepends=True):
            if continued:  # the rest of a line begun in the previous block: neither header nor group
                continued = False
                out.append(line)
                continue
            header = _SECTION.match(line.strip())
            if header and not line[:1].isspace():
                self.section = header[1]
            elif self.section == "global" and re.match(r"^\s+group\s+\S+\s*$", line):
                continue
            out.append(line)
        return "".join(out)


def parse_haproxy_config(text: str) -> HaproxyConfig:
    """Frontends (id, type, binds), stats socket and state file of a controller-rendered config."""
    frontends: list[Frontend] = []
    stats_socket = state_file = None
    default_mode = "tcp"
    section = name = ""
    mode: str | None = None
    tls = False
    binds: list[str] = []

    def close() -> None:
        if section == "frontend":
            kind = "TERMINATED_HTTPS" if tls else (mode or default_mode).upper()
            frontends.append(Frontend(name, kind, tuple(binds)))

    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _SECTION.match(stripped)
        if header and not raw[:1].isspace():
            close()
            section, name, mode, tls, binds = header[1], header[2] or "", None, False, []
            continue
        words = stripped.split()
        if section == "global" and words[:2] == ["stats", "socket"] and len(words) > 2:
            stats_socket = stats_socket or words[2]
        elif section == "global" and words[0] == "server-state-file" and len(words) > 1:
            state_file = words[1]
        elif section == "defaults" and words[0] == "mode" and len(words) > 1:
            default_mode = words[1]
        elif section == "frontend" and words[0] == "mode" and len(words) > 1 and mode is None:
            mode = words[1]
        elif section == "frontend" and words[0] == "bind" and len(words) > 1:
            binds.append(words[1])
            if "ssl" in words[2:] and "crt-list" in words[2:]:
                tls = True
    close()
    return HaproxyConfig(tuple(frontends), stats_socket, state_file)


def bind_addresses(binds: tuple[str, ...]) -> list[str]:
    """The IP addresses of ``bind`` arguments (``1.2.3.4:80``, ``[::1]:80``, ``ipv6@...``), unique."""
    seen: list[str] = []
    for bind in binds:
        for part in bind.split(","):
            addr = part.split("@", 1)[-1].rsplit(":", 1)[0].strip("[]")
            if addr and addr not in seen and not addr.startswith(("127.", "::1")):
                seen.append(addr)
    return seen

"""Pure text -> data parsers for what the controller renders and what haproxy answers."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

PROMETHEUS_FRONTEND = "prometheus-exporter-internal-endpoint"
_SECTION = re.compile(
    r"^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|"
    r"program|http-errors|ring|cache|mailers)(?:\s+(\S+))?\s*$"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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
    out: list[str] = []
    section = ""
    for line in text.splitlines(keepends=True):
        header = _SECTION.match(line.strip())
        if header and not line[:1].isspace():
            section = header[1]
        elif section == "global" and re.match(r"^\s+group\s+\S+\s*$", line):
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

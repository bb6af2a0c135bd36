"""Where heartbeats go: ``controller_ip_port_list`` parsed, resolved and taken in round-robin order.

A malformed entry is skipped with one log line and the rest are still used (the existing agent stopped
at the first bad entry).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

Target = tuple[int, Any]  # address family, socket address


@dataclass(frozen=True)
class Destination:
    """One ``controller_ip_port_list`` entry."""

    host: str
    port: int


def parse_destination(entry: str) -> Destination:
    """``ip:port`` or ``[ipv6]:port`` (split on the last colon); ValueError when malformed."""
    host, sep, port_text = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise ValueError(f"{entry!r} is not ip:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{entry!r} has no valid port")
    return Destination(host, int(port_text))


def parse_destinations(entries: Iterable[str]) -> tuple[list[Destination], list[str]]:
    """The usable destinations, in order, and one error text per malformed entry."""
    good: list[Destination] = []
    bad: list[str] = []
    for entry in entries:
        try:
            good.append(parse_destination(entry))
        except ValueError as exc:
            bad.append(str(exc))
    return good, bad


class Targets:
    """The controllers in round-robin order, re-resolved whenever the configured list changes."""

    def __init__(self) -> None:
        self._entries: tuple[str, ...] | None = None
        self._resolved: list[Target] = []
        self._next = 0

    def next(self, entries: tuple[str, ...]) -> Target | None:
        """The next controller to send to, or None when no entry is usable."""
        if entries != self._entries:
            self._entries, self._resolved, self._next = entries, self._resolve(entries), 0
        if not self._resolved:
            return None
        target = self._resolved[self._next % len(self._resolved)]
        self._next += 1
        return target

    @staticmethod
    def _resolve(entries: tuple[str, ...]) -> list[Target]:
        good, bad = parse_destinations(entries)
        for error in bad:
            LOG.error("controller_ip_port_list: skipping %s", error)
        resolved: list[Target] = []
        for dest in good:
            try:
                family, _, _, _, address = socket.getaddrinfo(dest.host, dest.port, 0, socket.SOCK_DGRAM)[0]
            except (OSError, UnicodeError) as exc:
                LOG.error("controller_ip_port_list: skipping %s:%d: %s", dest.host, dest.port, exc)
                continue
            resolved.append((family, address))
        return resolved

"""Validation at the edge: ids, file names and actions, checked before anything touches the disk."""

from __future__ import annotations

import re
from typing import Literal, get_args

from amphora_agent.errors import InvalidInput

_ID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{0,63}")
_PEM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}\.pem")
Action = Literal["start", "stop", "reload"]
ACTIONS: tuple[Action, ...] = get_args(Action)


def shown(value: str, limit: int = 100) -> str:
    """A caller's value quoted for an error message, cut to ``limit`` characters (escapes included)."""
    text = repr(value[:limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_object_id(value: str) -> bool:
    """Whether ``value`` is a UUID-like id (what ``object_id`` accepts)."""
    return _ID.fullmatch(value) is not None


def object_id(value: str, kind: str = "object") -> str:
    """A UUID-like id (hex and dashes, no leading dash): safe as a path segment and in argv."""
    if not _ID.fullmatch(value):
        raise InvalidInput("Invalid request", f"Invalid {kind} id: {shown(value)}")
    return value


def pem_name(value: str) -> str:
    """A tenant PEM file name: ``[\\w.-]+\\.pem`` in ASCII, not starting with a dot or a dash."""
    if not _PEM_NAME.fullmatch(value) or ".." in value:
        raise InvalidInput("Filename has wrong format")
    return value


def action(value: str) -> Action:
    """One of start, stop, reload (case-insensitive, as the existing agent)."""
    low = value.lower()
    for known in ACTIONS:
        if low == known:
            return known
    raise InvalidInput("Invalid Request", f"Unknown action: {low}")

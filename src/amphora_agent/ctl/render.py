"""How amphoractl prints: rich tables for people, JSON for scripts, errors on stderr.

rich is imported on first use, so commands that print plain text start faster.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# Exit codes (also in ``amphoractl --help``).
EXIT_AGENT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr); no colours when it is not a terminal."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def emit_json(data: Any) -> None:
    """Pretty JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def flat_value(value: Any) -> str:
    """A nested value on one line: ``k=v, ...`` for objects, ``a, b`` for lists."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={flat_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(flat_value(v) for v in value) or "-"
    if value is None:
        return "-"
    return str(value)


def key_values(title: str, data: Mapping[str, Any], expand: Iterable[str] = ()) -> None:
    """Two columns, one row per key; keys in ``expand`` get one row per nested key."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    nested = set(expand)
    for key, value in data.items():
        if key in nested and isinstance(value, Mapping) and value:
            for sub, item in value.items():
                table.add_row(f"{key}.{sub}", flat_value(item))
        else:
            table.add_row(key, flat_value(value))
    console().print(table)


def rows(title: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
    """A table with a header row."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in data:
        table.add_row(*(flat_value(cell) for cell in row))
    console().print(table)


def reply(data: Mapping[str, Any], as_json: bool) -> None:
    """An agent's success answer: ``OK (202)`` and its details."""
    if as_json:
        emit_json(dict(data))
        return
    out = f"{data.get('message', 'OK')} ({data.get('status')})"
    if data.get("details"):
        out += "\n" + str(data["details"])
    if data.get("etag"):
        out += f"\netag {data['etag']}"
    sys.stdout.write(out + "\n")


def error(status: int | None, message: str, details: str | None, as_json: bool) -> None:
    """An error on stderr: the agent's status, ``message`` and ``details``."""
    if as_json:
        body = {"error": {"status": status, "message": message, "details": details}}
        sys.stderr.write(json.dumps(body) + "\n")
        return
    head = f"Error {status}: {message}" if status else f"Error: {message}"
    text = head if not details else head + "\n" + "\n".join("  " + ln for ln in details.splitlines())
    sys.stderr.write(text + "\n")

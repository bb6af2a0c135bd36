"""What an uploaded haproxy config may make haproxy create, replace or delete: only the agent's files.

haproxy itself creates its stats socket and UNIX listeners wherever a config says (replacing what is
there), a ring's ``backing-file`` even during ``haproxy -c``, and runs Lua and ``program`` sections.
The agent writes the server-state file. So a config is refused (400, before ``haproxy -c`` runs)
unless its stats socket is ``<base_path>/<lb_id>.sock`` and its state file (if any) is
``<base_path>/<lb_id>/servers-state``, the paths the controller renders, and it uses none of the
directives below (the controller never renders them). Arguments are read as haproxy reads them
(quotes, escapes), so quoting a keyword does not get it past; an environment variable where a path
or keyword goes is refused, since its value is not known here. docs/operator-guide.md says more.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from amphora_agent.loadbalancers.haproxy_config import Word, keyword, words

REFUSED = {
    "lua-load": "it runs a Lua script while the config is parsed, even by haproxy -c",
    "lua-load-per-thread": "it runs a Lua script while the config is parsed, even by haproxy -c",
    "lua-prepend-path": "it makes Lua load code from other folders",
    "backing-file": "haproxy creates that file (and renames an existing one) even during haproxy -c",
    "server-state-base": "it moves the server-state file away from the agent's folder",
    "unix-bind": "it moves the UNIX sockets haproxy creates away from the agent's folder",
    "program": "haproxy's master would start that program",
}


_KEYWORDS = frozenset(REFUSED) | {"stats", "server-state-file", "bind", "peer"}


def _same_path(word: Word, expected: PurePosixPath) -> bool:
    text = word.text.removeprefix("unix@")
    path = PurePosixPath(text)
    return not word.expands and ".." not in path.parts and path == expected


def _file_addresses(word: Word) -> list[str]:
    """The UNIX-socket addresses in a ``bind`` or ``peer`` address list (haproxy creates those)."""
    if word.expands:
        return [word.text]
    return [part for part in word.text.split(",") if part.startswith(("/", "unix@"))]


def _line_problem(args: list[Word], stats_socket: PurePosixPath, state_file: PurePosixPath) -> str | None:
    keyword = args[0]
    if keyword.expands:
        return f"an environment variable in a keyword ({keyword.text!r}) is not accepted"
    name = keyword.text
    if name in REFUSED:
        return f"'{name}' is not accepted: {REFUSED[name]}"
    if name == "stats" and len(args) > 2 and args[1].text == "socket":
        if not _same_path(args[2], stats_socket):
            return f"stats socket {args[2].text!r}: only {stats_socket} is accepted (the agent's own path)"
    elif name == "server-state-file" and len(args) > 1:
        if not _same_path(args[1], state_file):
            return f"server-state-file {args[1].text!r}: only {state_file} is accepted (the agent's own path)"
    elif name in ("bind", "peer"):
        position = 1 if name == "bind" else 2
        if len(args) > position and (found := _file_addresses(args[position])):
            return f"{name} on a UNIX socket ({found[0]!r}) is not accepted: haproxy would create that file"
    return None


def problems(lines: Iterable[str], stats_socket: PurePosixPath, state_file: PurePosixPath) -> list[str]:
    """Why this config could make haproxy or the agent touch files outside their folder, by line."""
    found = []
    for number, line in enumerate(lines, 1):
        first = keyword(line)
        if first is not None and first not in _KEYWORDS:
            continue  # most lines: not one of the keywords above, told without cutting the line
        args = words(line)
        problem = _line_problem(args, stats_socket, state_file) if args else None
        if problem is not None:
            found.append(f"line {number}: {problem}")
    return found

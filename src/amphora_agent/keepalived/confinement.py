"""What an uploaded keepalived config (VRRP or LVS) may make keepalived run, read or write.

keepalived runs as root every program a config names (``vrrp_script``'s ``script``, ``MISC_CHECK``'s
``misc_path``, the ``notify*`` scripts), creates the FIFOs and files ``global_defs`` names, creates
the file a ``track_file`` names, and reads whatever an ``include`` names. The controller's templates
name three kinds of program only: scripts in the agent's own folder
(``<base_path>/vrrp/check_script.sh``, ``<base_path>/lvs/check/udp_check.sh``), the image's
``amphora-health-checker`` (SCTP monitors) and ``ping`` (PING monitors); they never use the other
keywords below, nor keepalived's ``$NAME=`` definitions (which could hide any of them). A config that
does is refused (400) before keepalived sees it. docs/operator-guide.md says more.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

COMMANDS = frozenset({"amphora-health-checker", "ping", "ping6", "/usr/bin/ping", "/bin/ping"})
PROGRAM_KEYWORDS = frozenset({"script", "misc_path"})
REFUSED = {
    "global_defs": "its keywords name files keepalived creates and scripts it runs",
    "include": "it reads a file the check never saw",
    "track_file": "keepalived creates the file it names",
    "vrrp_track_file": "keepalived creates the file it names",
}


def _words(line: str) -> list[str] | None:
    """A line split as keepalived reads it (``#`` and ``!`` start comments), None when unbalanced."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#!"
    try:
        return list(lexer)
    except ValueError:
        return None


def _program_problem(keyword: str, command: str, base: PurePosixPath) -> str | None:
    words = _words(command)  # a quoted command line holds the program and its arguments
    if not words:
        return f"{keyword} {command!r}: no program"
    program = words[0]
    if program in COMMANDS:
        return None
    path = PurePosixPath(program)
    if path.is_absolute() and ".." not in path.parts and "$" not in program and path.is_relative_to(base):
        return None
    return f"{keyword} runs {program}: only the agent's scripts in {base}, {', '.join(sorted(COMMANDS))}"


def _line_problem(words: list[str], base: PurePosixPath) -> str | None:
    keyword = words[0]
    if keyword.startswith("@"):  # "@host keyword ...": a line for one host only
        if len(words) == 1:
            return None
        words = words[1:]
        keyword = words[0]
    if keyword.startswith(("$", "~")):
        return f"{keyword}: definitions and sequences are refused (they can hide any keyword)"
    if keyword in REFUSED:
        return f"{keyword}: {REFUSED[keyword]}"
    if keyword.startswith("notify") or keyword.endswith(("_fifo", "_fifo_script")):
        return f"{keyword}: keepalived would run or create what it names"
    if keyword in PROGRAM_KEYWORDS and len(words) > 1:  # a bare "script" is a track_script entry
        return _program_problem(keyword, words[1], base)  # misc_path "prog args" or script prog args
    return None


def problems(text: str, base_path: str) -> list[str]:
    """Why keepalived must not run ``text`` for this agent (empty: nothing it names is outside)."""
    base = PurePosixPath(base_path)
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = _words(line)
        if words is None:
            found.append(f"line {number}: an unbalanced quote")
            continue
        problem = _line_problem(words, base) if words else None
        if problem:
            found.append(f"line {number}: {problem}")
    return found

"""haproxy's word splitting, the config rules that keep haproxy in the agent's folders, and file
operations that never follow a link below their root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from amphora_agent.errors import UnsafePath
from amphora_agent.loadbalancers import confinement
from amphora_agent.loadbalancers.haproxy_config import Word, atoi, keyword, ssl_session_cache, words
from amphora_agent.system import files
from tests.conftest import FIXTURES

SOCKET = PurePosixPath("/var/lib/octavia/lb.sock")
STATE = PurePosixPath("/var/lib/octavia/lb/servers-state")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    bind 1.2.3.4:80 ssl crt-list /x.pem", ["bind", "1.2.3.4:80", "ssl", "crt-list", "/x.pem"]),
        ("\tmode http # a comment", ["mode", "http"]),
        ("# only a comment", []),
        ("", []),
        ('"lua-"load /x', ["lua-load", "/x"]),
        (r"lua\x2dload /x", ["lua-load", "/x"]),
        (r"a\ b \#c", ["a b", "#c"]),
        ("'a b' \"c#d\" e'$f'", ["a b", "c#d", "e$f"]),
        (r'"\$HOME" \\', ["$HOME", "\\"]),
        (r"x \n \t", ["x", "\n", "\t"]),
        ('a "" b', ["a", "", "b"]),
        # the manual's example (2.2): all strictly equivalent
        (r"log-format %{+Q}o\ %t\ %s\ %{-Q}r", ["log-format", "%{+Q}o %t %s %{-Q}r"]),
        ("log-format \"%{+Q}o %t\"' %s'\\ %{-Q}r", ["log-format", "%{+Q}o %t %s %{-Q}r"]),
        ("a\u00a0b c", ["a\u00a0b", "c"]),  # haproxy splits on space and tab only
    ],
)
def test_words_are_cut_as_haproxy_cuts_them(line: str, expected: list[str]) -> None:
    """Quotes, escapes and comments resolve as in haproxy's manual, section 2.2."""
    assert [word.text for word in words(line)] == expected


@pytest.mark.parametrize(
    ("line", "expands"),
    [
        ('stats socket "${HOME}/x"', [False, False, True]),
        ("a '$b' \"\\$c\" $d", [False, False, False, False]),
    ],
)
def test_environment_variables_are_flagged(line: str, expands: list[bool]) -> None:
    """Only a ``$`` inside double quotes expands (haproxy's rule); that word is flagged."""
    assert [word.expands for word in words(line)] == expands


@pytest.mark.parametrize(("text", "value"), [("12", 12), ("  -3x", -3), ("abc", 0), ("", 0), ("1e9", 1)])
def test_atoi(text: str, value: int) -> None:
    """Numbers read as haproxy reads them (C atoi)."""
    assert atoi(text) == value


@pytest.mark.parametrize(
    ("name", "entries"),
    [
        ("multi-listener.cfg", 1085440),
        ("multi-listener-active-standby.cfg", 1085440),
        ("single-http.cfg", 0),
        ("ipv6.cfg", 0),
        ("prometheus.cfg", 0),
    ],
)
def test_ssl_session_cache_of_the_fixtures(name: str, entries: int) -> None:
    """The TLS fixture's cache is what the controller sized; configs without TLS listeners have none."""
    assert ssl_session_cache((FIXTURES / "haproxy" / name).read_text().splitlines()) == entries


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("frontend f\n    bind :443 ssl crt /x\n", 20000),
        ("global\n    tune.ssl.cachesize 0\nfrontend f\n    bind :443 ssl crt /x\n", 0),
        ("global\n    tune.ssl.cachesize 5\n    tune.ssl.cachesize 7\nfrontend f\n    bind :1 ssl\n", 7),
        ("global\n    tune.ssl.cachesize 9\nbackend b\n    server s 1.2.3.4:443 ssl verify none\n", 0),
        ("global\n    tune.ssl.cachesize -1\nfrontend f\n    bind :443 ssl crt /x\n", 0),
        ("global\n    tune.ssl.cachesize 99999999999\nfrontend f\n    bind :1 ssl crt /x\n", 0),
    ],
    ids=["default", "zero", "last-wins", "server-ssl-only", "negative", "over-int"],
)
def test_ssl_session_cache(text: str, entries: int) -> None:
    """Allocated only for TLS binds; haproxy refuses negative and overflowing values on its own.
    Lines read from a file (newlines kept) count the same."""
    assert ssl_session_cache(text.splitlines()) == entries
    assert ssl_session_cache(text.splitlines(keepends=True)) == entries


@pytest.mark.parametrize(
    ("line", "first"),
    [
        ("global\n", "global"),
        ("    bind :80\n", "bind"),
        ("\n", ""),
        ("# x\n", ""),
        ("a#b", "a"),
        ('"x" y', None),
    ],
)
def test_keyword(line: str, first: str | None) -> None:
    """The first word without cutting the line (newline left out); None when quoting needs ``words``."""
    assert keyword(line) == first


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "haproxy").iterdir()))
def test_controller_fixtures_name_only_the_agents_files(name: str) -> None:
    """Every controller config passes as it comes (its stats socket and state file are the agent's)."""
    text = (FIXTURES / "haproxy" / name).read_text()
    lb_id = text.splitlines()[0].split()[-1]
    socket, state = (
        PurePosixPath(f"/var/lib/octavia/{lb_id}.sock"),
        PurePosixPath(f"/var/lib/octavia/{lb_id}/servers-state"),
    )
    assert confinement.problems(text.splitlines(), socket, state) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("    stats socket /tmp/x.sock mode 0666", "stats socket '/tmp/x.sock'"),
        ("    stats socket /var/lib/octavia/./lb.sock", None),
        ("    stats socket unix@/var/lib/octavia/lb.sock", None),
        ("    stats socket /var/lib/octavia/lb/../lb.sock", "stats socket"),
        ("    stats socket ipv4@127.0.0.1:9999", "stats socket"),
        ("    server-state-file /var/lib/octavia/lb/servers-state", None),
        ("    server-state-file servers-state", "server-state-file"),
        ("    bind 1.2.3.4:80", None),
        ("    bind abns@x", None),
        ("    bind /x.sock", "bind on a UNIX socket"),
        ('    bind "${SOCK}"', "bind on a UNIX socket"),
        ("    peer a 1.2.3.4:1025", None),
        ("    peer a /x.sock", "peer on a UNIX socket"),
        ("    backing-file /etc/passwd", "backing-file"),
        ("program x", "program"),
        ("    log /dev/log local0", None),
        ("    external-check command /var/lib/octavia/ping-wrapper.sh", None),
    ],
)
def test_line_rules(line: str, problem: str | None) -> None:
    """One rule per line: the agent's own paths pass; other files, Lua, programs and rings do not."""
    found = confinement.problems(["global\n", line + "\n"], SOCKET, STATE)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith("line 2: ") and problem in found[0]


def test_word_dataclass_defaults() -> None:
    """A plain word does not expand."""
    assert Word("x") == Word("x", False)


# -- file operations below a root ---------------------------------------------------------------
def test_confined_write_creates_real_folders(tmp_path: Path) -> None:
    """Missing folders below the root are created; the file lands atomically, no temp left."""
    path = tmp_path / "a" / "b" / "f"
    files.atomic_write(path, b"x", files.PUBLIC, root=tmp_path)
    assert path.read_bytes() == b"x"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f"]
    assert files.read_bytes(path, root=tmp_path) == b"x"


@pytest.mark.parametrize("where", ["a", "a/b"])
def test_links_below_the_root_are_never_followed(tmp_path: Path, where: str) -> None:
    """A linked folder on the way: write and read refuse, remove and remove_tree leave the target."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "f").write_bytes(b"keep")
    (outside / "f").write_bytes(b"keep")
    link = root / where
    link.parent.mkdir(parents=True)
    os.symlink(outside if where == "a" else outside / "b", link)
    target = root / "a" / "b" / "f"
    with pytest.raises(UnsafePath):
        files.atomic_write(target, b"evil", root=root)
    with pytest.raises(UnsafePath):
        files.read_bytes(target, root=root)
    with pytest.raises(UnsafePath):
        files.ensure_dir(root / "a" / "b" / "c", root=root)
    assert files.remove(target, root=root) is False
    files.remove_tree(root / "a" / "b", root=root)
    assert (outside / "b" / "f").read_bytes() == b"keep"
    assert (outside / "f").read_bytes() == b"keep"
    files.remove_tree(link, root=root)  # the link itself goes
    assert not os.path.lexists(link)
    assert (outside / "b" / "f").read_bytes() == b"keep"


def test_a_linked_root_is_the_operators_choice(tmp_path: Path) -> None:
    """The root itself may be a link (e.g. certificates on a mounted ramfs)."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "root")
    files.atomic_write(tmp_path / "root" / "x" / "f", b"ok", root=tmp_path / "root")
    assert (real / "x" / "f").read_bytes() == b"ok"


@pytest.mark.parametrize("path", ["../x", "a/../../x"])
def test_paths_leaving_the_root_are_refused(tmp_path: Path, path: str) -> None:
    """A path with ``..`` or outside the root is refused before anything happens."""
    with pytest.raises(UnsafePath):
        files.atomic_write(tmp_path / "root" / path, b"x", root=tmp_path / "root")
    with pytest.raises(UnsafePath):
        files.atomic_write(tmp_path / "x", b"x", root=tmp_path / "root")


def dead_pid_as_long_as_ours() -> int:
    """A pid with as many digits as this process's (the temp name keeps its length) that runs nothing."""
    pid = int("9" * len(str(os.getpid())))
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


@pytest.mark.parametrize("length", [1, 200, 234, 250, 251, 252, 253, 255])
def test_temp_names_fit_for_every_name_length(tmp_path: Path, length: int) -> None:
    """A file name up to NAME_MAX gets a temp name that fits too; stale temps of it are found."""
    name = "n" * length
    assert len(files.temp_name(name)) <= files.NAME_MAX
    files.atomic_write(tmp_path / name, b"x")
    files.atomic_write(tmp_path / "c" / name, b"x", root=tmp_path)
    stale = tmp_path / files.temp_name(name).replace(f"-{os.getpid()}-", f"-{dead_pid_as_long_as_ours()}-")
    stale.write_bytes(b"partial")
    assert files.clean_stale_temps(tmp_path, name=name) == [stale]

"""Properties of the pure parsers of haproxy's text: stored configs, peer names, ``show stat``.

Each parser takes text someone else wrote (the controller, haproxy), so for any text it returns
data or raises its documented error (``StatsError``), never anything else; and what is written in
the controller's or haproxy's shape parses back to the values it came from.
"""

from __future__ import annotations

import csv
import io
import re
import string
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from amphora_agent.health import samples
from amphora_agent.loadbalancers import haproxy_config
from tests.unit.strategies import any_text, ipv4, ipv6, lines_of, ports, uuids, words

# -- haproxy_config.py: haproxy configs, peer names, control bytes ------------------------------------------
HAPROXY_TOKENS = (
    st.sampled_from(
        [
            "global",
            "defaults",
            "frontend",
            "backend",
            "listen",
            "mode",
            "http",
            "tcp",
            "bind",
            "ssl",
            "crt-list",
            "stats",
            "socket",
            "server-state-file",
            "group",
            "nogroup",
            "#",
            "maxconn",
            "1",
        ]
    )
    | words
)


@settings(max_examples=300, deadline=None)
@given(any_text | lines_of(HAPROXY_TOKENS))
def test_haproxy_config_parse_never_fails(text: str) -> None:
    """Any text parses to frontends, a socket and a state file: the parser never raises."""
    config = haproxy_config.parse_haproxy_config(text)
    assert all(f.type in ("HTTP", "TCP", "TERMINATED_HTTPS") or f.type for f in config.frontends)
    assert haproxy_config.PROMETHEUS_FRONTEND not in config.listener_ids


frontends = st.lists(
    st.tuples(
        uuids,
        st.sampled_from(["http", "tcp", None]),
        st.lists(st.tuples(ipv4 | ipv6, ports), min_size=1, max_size=3),
        st.booleans(),
    ),
    max_size=5,
    unique_by=lambda f: f[0],
)


@settings(max_examples=200, deadline=None)
@given(frontends, st.sampled_from(["http", "tcp"]), uuids)
def test_rendered_haproxy_configs_parse_back(
    items: list[tuple[str, str | None, list[tuple[str, int]], bool]], default_mode: str, lb_id: str
) -> None:
    """A config in the controller's shape gives back each frontend's id, type and binds, in order."""
    lines = [
        "global",
        "    daemon",
        f"    stats socket /var/lib/octavia/{lb_id}.sock mode 0666 level user",
        f"    server-state-file /var/lib/octavia/{lb_id}/servers-state",
        "defaults",
        f"    mode {default_mode}",
    ]
    expected = []
    for frontend_id, mode, binds, tls in items:
        rendered = [
            f"{address}:{port}" if ":" not in address else f"[{address}]:{port}" for address, port in binds
        ]
        lines.append(f"frontend {frontend_id}")
        if mode:
            lines.append(f"    mode {mode}")
        for i, bind in enumerate(rendered):
            suffix = " ssl crt-list /var/lib/octavia/certs/x/y.pem" if tls and i == 0 else ""
            lines.append(f"    bind {bind}{suffix}")
        lines.append(f"backend pool:{frontend_id}\n    server m 192.0.2.1:80")
        kind = "TERMINATED_HTTPS" if tls else (mode or default_mode).upper()
        expected.append(haproxy_config.Frontend(frontend_id, kind, tuple(rendered)))
    config = haproxy_config.parse_haproxy_config("\n".join(lines) + "\n")
    assert list(config.frontends) == expected
    assert config.stats_socket == f"/var/lib/octavia/{lb_id}.sock"
    assert config.server_state_file == f"/var/lib/octavia/{lb_id}/servers-state"


@settings(max_examples=300, deadline=None)
@given(any_text | lines_of(HAPROXY_TOKENS))
def test_group_lines_are_stripped_from_global_only(text: str) -> None:
    """Stripping keeps every line but ``group`` lines of ``global``, in order, and is idempotent."""
    stripped = haproxy_config.strip_group_lines(text)
    assert haproxy_config.strip_group_lines(stripped) == stripped
    kept = iter(text.splitlines(keepends=True))
    for line in stripped.splitlines(keepends=True):  # a subsequence of the input's lines
        assert any(line == candidate for candidate in kept)
    removed = len(text.splitlines()) - len(stripped.splitlines())
    assert removed == 0 or re.search(r"(?m)^\s+group\s+\S+\s*$", text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
@example("a\tb\nc")
@example("x\r\ny")
@example("\x7f")
def test_control_bytes_are_found_with_their_line(text: str) -> None:
    """The first control byte other than tab and newline is found, on its 1-based line; else None."""
    line = haproxy_config.find_control_bytes(text)
    bad = [i for i, c in enumerate(text) if (ord(c) < 32 and c not in "\t\n") or c == "\x7f"]
    if not bad:
        assert line is None
    else:
        assert line == text.count("\n", 0, bad[0]) + 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_peer_names_are_safe_haproxy_names(amphora_id: str) -> None:
    """Any amphora id gives a 27-character url-safe name that does not start with a dash."""
    name = haproxy_config.peer_name(amphora_id)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{26}", name)
    assert haproxy_config.peer_name(amphora_id) == name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "ipv4@", "ipv6@"]), ipv4 | ipv6, ports), max_size=6))
def test_bind_addresses_are_unique_and_not_loopback(binds: list[tuple[str, str, int]]) -> None:
    """Every non-loopback bind address once, in first-seen order."""
    rendered = tuple(f"{p}[{a}]:{port}" if ":" in a else f"{p}{a}:{port}" for p, a, port in binds)
    expected = list(dict.fromkeys(a for _, a, _ in binds if not a.startswith(("127.", "::1"))))
    assert haproxy_config.bind_addresses(rendered) == expected


# -- samples.py: show stat ------------------------------------------------------------------------------
cell = st.text(string.ascii_letters + string.digits + ' _-:.,"', max_size=10)
counter = st.integers(min_value=0, max_value=2**63)


@settings(max_examples=300, deadline=None)
@given(
    any_text
    | st.lists(st.lists(cell, max_size=8).map(",".join), max_size=6).map(lambda r: "# " + "\n".join(r))
)
@example("# pxname,svname,status\n")
@example("# pxname,svname,status\nx,BACKEND,UP\n")
@example("# pxname,svname,status,stot\nx,FRONTEND,OPEN,abc\n")
@example('# pxname,svname,status\n"x,y",FRONTEND,"OPEN\n')
def test_show_stat_answers_are_a_sample_or_a_stats_error(text: str) -> None:
    """Any socket answer gives a sample or StatsError: a garbled answer never escapes as another error."""
    try:
        sample = samples.sample_from_answer(text)
    except samples.StatsError:
        return
    assert all(isinstance(s, samples.ListenerSample) for s in sample.listeners.values())


rows = st.lists(
    st.fixed_dictionaries(
        {
            "pxname": uuids,
            "svname": st.sampled_from(["FRONTEND", "BACKEND"]) | uuids,
            "status": st.sampled_from(["OPEN", "UP", "DOWN", "MAINT", "no check"]),
            "weight": st.integers(0, 256).map(str),
            "scur": counter.map(str),
            "stot": counter.map(str),
            "bin": counter.map(str),
            "bout": counter.map(str),
            "ereq": counter.map(str),
        }
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    rows,
    st.permutations(list(samples.COLUMNS[1:])),
    st.lists(st.sampled_from(["qcur", "qmax", "rate"]), unique=True),
)
def test_show_stat_rows_parse_back_in_any_column_order(
    items: list[dict[str, str]], order: list[str], extra: list[str]
) -> None:
    """Rows with the columns after ``pxname`` in any order, and columns the heartbeat does not read,
    parse back unchanged."""
    header = ["pxname", *order[:3], *extra, *order[3:]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in items:
        writer.writerow([row.get(name, "7") for name in header])
    parsed = samples.parse_show_stat("# " + out.getvalue())
    assert parsed == [{name: row[name] for name in samples.COLUMNS} for row in items]


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({name: counter for name in samples.COUNTER_FIELDS}),
    st.none() | st.fixed_dictionaries({name: counter for name in samples.COUNTER_FIELDS}),
)
def test_deltas_are_never_negative(current: dict[str, int], last: dict[str, int] | None) -> None:
    """A delta is the growth since the last sample, or the whole value after a restart: never negative."""
    result = samples.deltas(current, last)
    for name in samples.COUNTER_FIELDS:
        assert result[name] >= 0
        if last is None or current[name] < last[name]:
            assert result[name] == current[name]
        else:
            assert result[name] == current[name] - last[name]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    json_values
    | st.dictionaries(
        st.text(max_size=8),
        st.dictionaries(st.sampled_from(samples.COUNTER_FIELDS), json_values),
    )
)
def test_persisted_counters_keep_only_integers(data: Any) -> None:
    """Any JSON in the counters file gives counters of plain integers; nothing else survives."""
    for values in samples.parse_counters(data).values():
        assert values and set(values) <= set(samples.COUNTER_FIELDS)
        assert all(type(v) is int for v in values.values())


# -- the haproxy word cutter and its fast first-word look ----------------------------------------------------
LINE_PIECES = st.lists(
    st.sampled_from([" ", "\t", "#", '"', "'", "\\", "$", "x", "lua-load", "stats", "socket", "/a", "\\x2d"])
    | st.text(alphabet=string.printable.strip() + " \t", max_size=4),
    max_size=12,
)


@given(LINE_PIECES, st.sampled_from(["", "\n"]))
@settings(max_examples=300)
def test_keyword_agrees_with_words(pieces: list[str], end: str) -> None:
    """For any line (as read from a file: one newline at most, at its end), the fast first word, when
    it can tell, is the first word haproxy's cutting gives."""
    line = "".join(pieces) + end
    first = haproxy_config.keyword(line)
    cut = haproxy_config.words(line)
    if first is not None:
        assert first == (cut[0].text if cut else "")
    assert all(isinstance(word.text, str) for word in cut)

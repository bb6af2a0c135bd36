"""The rewrite of haproxy's exporter text: byte for byte the existing proxy's answer, plus IPVS families."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amphora_agent.metrics import render
from amphora_agent.metrics.exposition import Family, parse
from tests.metrics_contract import PROXY_MAP, proxy_rewrite

DATA = Path(__file__).resolve().parents[1] / "data" / "prometheus"
OCTAVIA_INPUT = (DATA / "octavia-sample-haproxy.txt").read_bytes()
OCTAVIA_OUTPUT = (DATA / "octavia-sample-octavia.txt").read_bytes()
HAPROXY_26 = (DATA / "haproxy-2.6-prometheus-cfg.txt").read_bytes()
LISTENER = "12aabb74-f964-4687-b62a-91eeb452d5a7"
POOL = f"3b1609b2-c599-43aa-9a0e-977ee9ef5f06:{LISTENER}"
MEMBER = "3687fe28-01e9-4a9f-9988-8855b753bb25"


def rewritten(text: bytes, added: tuple[Family, ...] = ()) -> str:
    """``render.rewrite`` joined and decoded."""
    return b"".join(render.rewrite(text, added)).decode()


def by_lines(text: bytes) -> str:
    """The general path alone, one line at a time."""
    return b"".join(line for _, line in render._lines(text)).decode()


def test_octavias_own_sample_gives_octavias_own_answer_byte_for_byte() -> None:
    """The proxy's unit-test pair: load 1 on 2 cores, 23.5 % memory, the same bytes out."""
    body = render.scrape_body(OCTAVIA_INPUT, render.cpu_percent(1.0, 2), 23.5)
    assert b"".join(body) == OCTAVIA_OUTPUT


@pytest.mark.parametrize("text", [OCTAVIA_INPUT, HAPROXY_26], ids=["octavia-sample", "haproxy-2.6"])
def test_the_rewrite_is_the_proxys_loop(text: bytes) -> None:
    """Family by family and label by label: the same text as the proxy's loop over its own table."""
    expected = proxy_rewrite(text.decode().splitlines(keepends=True))
    assert rewritten(text) == expected
    assert by_lines(text) == expected


def test_haproxy_26_families_names_labels_and_help() -> None:
    """On haproxy 2.6: only mapped families, proxy HELP texts, renamed label keys, no internal proxy."""
    found = parse(rewritten(HAPROXY_26))
    targets = {octavia: help_text for octavia, help_text in PROXY_MAP.values()}
    assert set(found.families()) <= set(targets)
    for name, help_text in targets.items():
        if help_text is not None and name in found.helps:
            assert found.helps[name] == help_text
    assert "prometheus-exporter" not in rewritten(HAPROXY_26)
    keys = {s.name: frozenset(s.labels) - {"state", "code"} for s in found.samples}
    assert {keys[n] for n in keys if n.startswith("octavia_listener_")} == {frozenset({"listener"})}
    assert {keys[n] for n in keys if n.startswith("octavia_pool_")} == {frozenset({"pool"})}
    assert {keys[n] for n in keys if n.startswith("octavia_member_")} == {frozenset({"pool", "member"})}
    assert {keys[n] for n in keys if n.startswith(("octavia_loadbalancer_", "octavia_memory_"))} == {
        frozenset()
    }
    status = {tuple(s.labels.items()): s.value for s in found.samples if s.name == "octavia_member_status"}
    assert status[(("pool", POOL), ("member", MEMBER), ("state", "UP"))] == "1"
    listeners = {s.labels["listener"] for s in found.samples if s.name == "octavia_listener_status"}
    assert listeners == {LISTENER, "fe11efda-23d6-4108-9ad3-fbd73c0af2ea"}  # the PROMETHEUS listener too


HELP_TYPE = "# HELP {0} help of {0}\n# TYPE {0} gauge\n"


@pytest.mark.parametrize(
    ("case", "text"),
    [
        (
            "haproxy's shape",
            HELP_TYPE.format("haproxy_frontend_status") + 'haproxy_frontend_status{proxy="a"} 1\n',
        ),
        (
            "no trailing newline",
            HELP_TYPE.format("haproxy_backend_weight") + 'haproxy_backend_weight{proxy="p"} 3',
        ),
        ("lines before any HELP", 'haproxy_server_weight{proxy="p",server="s"} 2\n# comment\n\n'),
        ("a blank line", HELP_TYPE.format("haproxy_frontend_bytes_in_total") + "\n"),
        (
            "labels in another order",
            HELP_TYPE.format("haproxy_server_status") + 'haproxy_server_status{server="s",proxy="p"} 1\n',
        ),
        (
            "another metric inside the block",
            HELP_TYPE.format("haproxy_process_listeners")
            + "haproxy_process_listeners 3\nhaproxy_process_current_connections 7\n",
        ),
        (
            "a TYPE line of another metric",
            "# HELP haproxy_server_weight w\n# TYPE haproxy_server_status gauge\n",
        ),
        ("only the HELP line", "# HELP haproxy_server_weight w\n"),
        ("an unmapped family", HELP_TYPE.format("haproxy_process_nbthread") + "haproxy_process_nbthread 2\n"),
        (
            "the internal proxies",
            HELP_TYPE.format("haproxy_server_weight")
            + 'haproxy_server_weight{proxy="prometheus-exporter-internal",server="prometheus-internal"} 1\n'
            + 'haproxy_server_weight{proxy="p",server="s"} 1\n',
        ),
        (
            "process metrics with a HELP override",
            HELP_TYPE.format("haproxy_process_pool_used_bytes") + "haproxy_process_pool_used_bytes 78848\n",
        ),
        ("empty", ""),
    ],
)
def test_every_shape_is_rewritten_as_the_proxy_does(case: str, text: str) -> None:
    """Blocks in other shapes take the line-by-line path and give the proxy's result too."""
    expected = proxy_rewrite(text.splitlines(keepends=True))
    if not text.endswith("\n") and expected and not expected.endswith("\n"):
        expected += "\n"  # the proxy copies haproxy's missing last newline; the agent ends every line
    assert rewritten(text.encode()) == expected


NAMES = st.sampled_from([*PROXY_MAP, "haproxy_process_nbthread", "haproxy_server_check_status"])
VALUES = st.sampled_from(["p", "prometheus-exporter-internal", "a:b", "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6"])


@st.composite
def exposition(draw: st.DrawFn) -> str:
    """haproxy-like text: families with HELP/TYPE and samples, sometimes out of shape."""
    parts = []
    for name in draw(st.lists(NAMES, max_size=6)):
        parts.append(HELP_TYPE.format(name))
        for _ in range(draw(st.integers(0, 3))):
            server = f',server="{draw(VALUES)}"' if name.startswith("haproxy_server_") else ""
            labels = "" if name.startswith("haproxy_process_") else f'{{proxy="{draw(VALUES)}"{server}}}'
            other = draw(st.sampled_from(["", name, "haproxy_process_listeners"]))
            parts.append(f"{other or name}{labels} {draw(st.integers(0, 99))}\n")
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(["\n", "# a comment\n", "haproxy_backend_weight 1\n"])))
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(exposition())
def test_generated_texts_are_rewritten_as_the_proxy_does(text: str) -> None:
    """Generated family mixes: the fast path and the line path agree with the proxy's loop."""
    assert rewritten(text.encode()) == proxy_rewrite(text.splitlines(keepends=True))


def test_added_samples_join_their_family_and_new_families_come_last() -> None:
    """One HELP/TYPE per family: an existing one gets the samples after haproxy's; a new one comes last."""
    bytes_in = Family(
        "octavia_listener_bytes_in_total",
        "counter",
        "x",
        ('octavia_listener_bytes_in_total{listener="u"} 5',),
    )
    packets = Family(
        "octavia_listener_packets_in_total",
        "counter",
        "Packets.",
        ('octavia_listener_packets_in_total{listener="u"} 9',),
    )
    text = rewritten(HAPROXY_26, (bytes_in, packets))
    found = parse(text)
    assert len(found.families()) == len(set(found.families()))
    assert text.count("# HELP octavia_listener_bytes_in_total ") == 1
    block = text.split("# HELP octavia_listener_bytes_in_total ")[1].split("# HELP ")[0]
    assert block.rstrip("\n").endswith('octavia_listener_bytes_in_total{listener="u"} 5')
    assert text.endswith(packets.text())


@pytest.mark.parametrize(
    ("meminfo", "percent"),
    [
        ("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 765 kB\n", 23.5),
        ("MemTotal: 3 kB\nMemAvailable: 1 kB\n", 66.7),
        ("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 50 kB\n", 80.0),  # no MemAvailable
        ("", 0.0),
    ],
)
def test_memory_percent_is_psutils(meminfo: str, percent: float) -> None:
    """(total - available) / total in percent, one decimal, as psutil's ``virtual_memory().percent``."""
    assert render.memory_percent(meminfo) == percent


def test_the_amphora_gauges_are_printed_as_the_proxy_prints_them() -> None:
    """One decimal, the proxy's HELP texts, gauges, first in the answer."""
    text = "".join(f.text() for f in render.amphora_families(render.cpu_percent(3.0, 4), 12.345))
    assert text == (
        "# HELP octavia_loadbalancer_cpu Load balancer CPU utilization (percentage).\n"
        "# TYPE octavia_loadbalancer_cpu gauge\noctavia_loadbalancer_cpu 75.0\n"
        "# HELP octavia_loadbalancer_memory Load balancer memory utilization (percentage).\n"
        "# TYPE octavia_loadbalancer_memory gauge\noctavia_loadbalancer_memory 12.3\n"
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(HAPROXY_26)), max_size=40), st.integers(0, 200))
def test_any_split_of_the_text_gives_the_same_answer(cuts: list[int], tiny: int) -> None:
    """Fed as it arrives, in pieces of any size (a ``# HELP`` cut in two too): the same bytes."""
    bounds = sorted({0, len(HAPROXY_26), *cuts, *range(tiny, tiny + 30)})
    family = Family("octavia_listener_status", "gauge", "x", ('octavia_listener_status{listener="u"} 1',))
    rewriter = render.Rewriter()
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        if index == len(cuts) // 2:
            rewriter.add([family])  # the agent's families come while haproxy's still arrive
        rewriter.feed(HAPROXY_26[start:end])
    assert b"".join(rewriter.finish()) == b"".join(render.rewrite(HAPROXY_26, [family]))

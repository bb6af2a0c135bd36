"""The heartbeat message: show stat parsing, deltas and the v3 builder, checked against the fixtures."""

from __future__ import annotations

import pytest

from amphora_agent.health import codec, samples, sender
from amphora_agent.health.samples import ListenerSample, PoolSample, Sample
from tests.conftest import FIXTURES

HEARTBEAT = FIXTURES / "heartbeat"
AMP_S = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"
HEADER = "# pxname,svname,scur,stot,bin,bout,ereq,status,weight\n"


def _csv(*rows: str) -> str:
    return HEADER + "".join(f"{row}\n" for row in rows) + "\n"


def _fixture_sample(beat: int) -> Sample:
    return samples.sample_from_answer((HEARTBEAT / f"show-stat-{beat}.csv").read_text())


@pytest.mark.parametrize("beat", [1, 2])
def test_one_query_gives_the_pools_of_the_second(beat: int) -> None:
    """``show stat -1 -1 -1`` holds the same pools as the existing agent's ``show stat -1 6 -1``."""
    servers = samples.parse_show_stat((HEARTBEAT / f"show-stat-{beat}-servers.csv").read_text())
    assert samples.pools_from_rows(servers) == _fixture_sample(beat).pools
    assert samples.listeners_from_rows(servers) == {}


def test_fixture_beats_build_the_fixture_messages_byte_for_byte() -> None:
    """The captured show stat answers give message-1.json, then (deltas) message-2.json, exactly."""
    counters: samples.Counters = {}
    for beat in (1, 2):
        message, counters = sender.build_message(AMP_S, beat - 1, _fixture_sample(beat), counters)
        expected = (HEARTBEAT / f"message-{beat}.json").read_bytes()
        assert codec.encode(message) == expected


def test_fixture_counters_are_the_absolute_values() -> None:
    """What is kept for the next beat is haproxy's absolute counters, keyed by listener."""
    _, counters = sender.build_message(AMP_S, 0, _fixture_sample(1), {})
    assert counters["6ecbef6c-ef23-4cbb-ab12-ca7118390d04"] == {
        "bin": 520,
        "bout": 1398,
        "ereq": 1,
        "stot": 10,
    }
    assert len(counters) == 4


def test_fixture_listeners_and_pools() -> None:
    """Four FRONTEND rows, six pools keyed pool:listener, member statuses as haproxy reports them."""
    sample = _fixture_sample(1)
    assert len(sample.listeners) == 4
    assert sample.listeners["a89fb3d1-d706-4431-a506-5696d13e932a"] == ListenerSample("OPEN", 0, 3, 93, 57, 0)
    assert len(sample.pools) == 6
    tcp = sample.pools["eb028816-3acc-4f2a-a234-9769e3ae2dd0:a89fb3d1-d706-4431-a506-5696d13e932a"]
    assert tcp == PoolSample(
        "UP", {"c7677741-b757-4828-8be4-95580f6b9e16": "UP", "29e3fb5f-6d24-4726-aa0f-36cbc35ad16d": "MAINT"}
    )


def test_prometheus_proxies_are_not_reported() -> None:
    """Rows whose proxy name contains 'prometheus' are dropped before anything else."""
    text = _csv(
        "prometheus-exporter-internal-endpoint,FRONTEND,1,9,10,20,0,OPEN,",
        "prometheus-exporter-internal,prometheus-internal,0,0,0,0,,UP,1",
        "prometheus-exporter-internal,BACKEND,0,0,0,0,,UP,1",
        "l1,FRONTEND,0,1,2,3,0,OPEN,",
    )
    rows = samples.parse_show_stat(text)
    assert [row["pxname"] for row in rows] == ["l1"]
    assert samples.pools_from_rows(rows) == {}


@pytest.mark.parametrize(
    ("status", "weight", "reported"),
    [
        ("UP", "1", "UP"),
        ("UP", "0", "DRAIN"),
        ("DOWN", "0", "DOWN"),
        ("UP 1/3", "1", "UP 1/3"),
        ("DOWN 1/2", "1", "DOWN 1/2"),
        ("MAINT", "1", "MAINT"),
        ("MAINT(via)", "1", "MAINT(via)"),
        ("DRAIN", "0", "DRAIN"),
        ("no check", "1", "no check"),
        ("NOLB", "1", "NOLB"),
    ],
)
def test_member_statuses(status: str, weight: str, reported: str) -> None:
    """Server statuses pass through, except UP with weight 0, which is DRAIN."""
    text = _csv(f"p:l,m1,0,0,0,0,,{status},{weight}", "p:l,BACKEND,0,0,0,0,,UP,1")
    assert samples.pools_from_rows(samples.parse_show_stat(text)) == {
        "p:l": PoolSample("UP", {"m1": reported})
    }


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Unknown command\n", id="not-csv"),
        pytest.param("", id="empty"),
        pytest.param(_csv("nocolon,BACKEND,0,0,0,0,,UP,1"), id="backend-without-colon"),
        pytest.param(_csv("a:b:c,BACKEND,0,0,0,0,,UP,1"), id="backend-with-two-colons"),
        pytest.param(_csv("p:l,m1,0,0,0,0,,UP,1"), id="servers-without-backend-row"),
        pytest.param("# pxname,svname\np:l,BACKEND\n", id="no-status-column"),
    ],
)
def test_unreadable_pool_answers_raise(text: str) -> None:
    """An answer the controller could not key fails the whole load balancer (StatsError)."""
    with pytest.raises(samples.StatsError):
        samples.pools_from_rows(samples.parse_show_stat(text))


def test_quoted_fields_are_read_as_csv() -> None:
    """A quoted field with a comma (haproxy quotes such texts) does not shift the columns read."""
    text = (
        "# pxname,svname,check_desc,scur,stot,bin,bout,ereq,status,weight\n"
        'p:l,m1,"Layer7 wrong status, code 503",0,0,0,0,,DOWN,1\n'
        "p:l,BACKEND,,0,0,0,0,,UP,1\n"
    )
    assert samples.pools_from_rows(samples.parse_show_stat(text)) == {"p:l": PoolSample("UP", {"m1": "DOWN"})}


def test_non_integer_counter_raises() -> None:
    """A counter that is not an integer fails the load balancer; an empty one counts as 0."""
    with pytest.raises(samples.StatsError):
        samples.listeners_from_rows(samples.parse_show_stat(_csv("l1,FRONTEND,x,1,2,3,0,OPEN,")))
    assert samples.listeners_from_rows(samples.parse_show_stat(_csv("l1,FRONTEND,,1,2,3,,OPEN,"))) == {
        "l1": ListenerSample("OPEN", 0, 1, 2, 3, 0)
    }


@pytest.mark.parametrize(
    ("current", "last", "expected"),
    [
        ((10, 20, 1, 5), None, (10, 20, 1, 5)),  # first beat: deltas are the absolute values
        ((10, 20, 1, 5), (4, 5, 1, 2), (6, 15, 0, 3)),
        ((3, 2, 0, 1), (40, 50, 2, 9), (3, 2, 0, 1)),  # haproxy restarted: the new absolute values
        ((10, 2, 1, 5), (4, 50, 1, 2), (6, 2, 0, 3)),  # per counter
        ((0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)),
    ],
)
def test_deltas(
    current: tuple[int, int, int, int], last: tuple[int, int, int, int] | None, expected: tuple[int, ...]
) -> None:
    """delta = current - last, never negative: a fall reports the current value."""
    names = samples.COUNTER_FIELDS
    result = samples.deltas(
        dict(zip(names, current, strict=True)), dict(zip(names, last, strict=True)) if last else None
    )
    assert tuple(result[name] for name in names) == expected


def test_message_layout_and_deltas() -> None:
    """Keys in the reference order; tx/rx/totconns/ereq are deltas and conns the current value."""
    sample = Sample({"l1": ListenerSample("FULL", scur=7, stot=12, bin=300, bout=900, ereq=2)}, {})
    message, counters = sender.build_message(
        "amp", 4, sample, {"l1": {"bin": 100, "bout": 400, "ereq": 2, "stot": 10}}
    )
    assert list(message) == ["id", "seq", "listeners", "pools", "ver"]
    assert message["listeners"]["l1"] == {
        "status": "FULL",
        "stats": {"tx": 500, "rx": 200, "conns": 7, "totconns": 2, "ereq": 0},
    }
    assert message["ver"] == 3 and message["seq"] == 4
    assert counters == {"l1": {"bin": 300, "bout": 900, "ereq": 2, "stot": 12}}


def test_complete_sample_forgets_listeners_that_are_gone() -> None:
    """When every load balancer answered, counters of listeners no longer reported are dropped."""
    _, counters = sender.build_message(
        "amp", 0, Sample({}, {}), {"old": {"bin": 1, "bout": 1, "ereq": 0, "stot": 1}}
    )
    assert counters == {}


def test_incomplete_sample_keeps_counters_of_silent_listeners() -> None:
    """A load balancer that did not answer keeps its counters, so its next answer is not counted twice."""
    old = {"silent": {"bin": 5, "bout": 6, "ereq": 0, "stot": 1}}
    sample = Sample({"l1": ListenerSample("OPEN", stot=1)}, {}, complete=False)
    message, counters = sender.build_message("amp", 0, sample, old)
    assert list(message["listeners"]) == ["l1"]
    assert counters["silent"] == old["silent"]


def test_uncounted_listener_reports_no_traffic_and_keeps_its_counters() -> None:
    """Counters that could not be read this beat: zero deltas, the last values kept, nothing counted twice."""
    old = {"udp": {"bin": 50, "bout": 60, "ereq": 0, "stot": 5}}
    sample = Sample({"udp": ListenerSample("OPEN", counted=False)}, {})
    message, counters = sender.build_message("amp", 0, sample, old)
    assert message["listeners"]["udp"]["stats"] == {"tx": 0, "rx": 0, "conns": 0, "totconns": 0, "ereq": 0}
    assert counters == old
    later = Sample({"udp": ListenerSample("OPEN", stot=7, bin=80, bout=90)}, {})
    message, _ = sender.build_message("amp", 1, later, counters)
    assert message["listeners"]["udp"]["stats"]["totconns"] == 2


def test_lvs_listeners_follow_haproxy_ones_with_bare_pool_ids() -> None:
    """An LVS source's listeners and bare-id pools are appended to haproxy's."""
    haproxy = Sample({"l1": ListenerSample("OPEN")}, {"p1:l1": PoolSample("UP", {"m": "UP"})})
    lvs = Sample({"u1": ListenerSample("OPEN", scur=2)}, {"p2": PoolSample("UP", {})})
    message, _ = sender.build_message("amp", 0, haproxy.merged(lvs), {})
    assert list(message["listeners"]) == ["l1", "u1"]
    assert list(message["pools"]) == ["p1:l1", "p2"]
    assert samples.no_lvs() == Sample()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"l1": {"bin": 1, "bout": 2, "ereq": 3, "stot": 4}},
            {"l1": {"bin": 1, "bout": 2, "ereq": 3, "stot": 4}},
        ),
        ({"l1": {"bin": 1, "junk": 2, "stot": "3", "ereq": True}}, {"l1": {"bin": 1}}),
        ({"l1": [1, 2]}, {}),
        ([1, 2], {}),
        (None, {}),
    ],
)
def test_persisted_counters_are_read_leniently(data: object, expected: samples.Counters) -> None:
    """A corrupt counters file loses only what is corrupt."""
    assert samples.parse_counters(data) == expected

"""The heartbeat sender without haproxy: destinations, gating, persistence, live settings, the listener."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphora_agent.ctl import heartbeat_listener
from amphora_agent.health import codec, samples, sender
from amphora_agent.health.targets import Destination, Targets, parse_destination
from amphora_agent.layout import Layout
from amphora_agent.settings import LiveSettings, Settings
from tests.conftest import FIXTURES

AMP_ID = "a46841f0-96d9-4a6c-bfb7-d874eeaabe30"
KEY = "unit-key"
LB_ID = "1255f924-18da-44a0-aad7-23512f2c0594"


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on the loopback that plays the health manager."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _settings(tmp_path: Path, *targets: str, **changes: object) -> Settings:
    base = Settings(
        base_path=tmp_path,
        base_cert_dir=tmp_path / "certs",
        amphora_id=AMP_ID,
        heartbeat_key=KEY,
        heartbeat_interval=1,
        controller_ip_port_list=targets,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


_OPEN: list[sender.HeartbeatSender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    """Every sender a test made closes its sockets afterwards."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _sender(settings: Settings, is_running: bool = True) -> tuple[sender.HeartbeatSender, LiveSettings]:
    live = LiveSettings(settings)
    made = sender.HeartbeatSender(live, Layout.from_settings(settings), lambda _lb: is_running)
    _OPEN.append(made)
    return made, live


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("203.0.113.130:5555", Destination("203.0.113.130", 5555)),
        (" [2001:db8::10]:5555 ", Destination("2001:db8::10", 5555)),
        ("2001:db8::10:5555", Destination("2001:db8::10", 5555)),  # split on the last colon
        ("controller.example:1", Destination("controller.example", 1)),
    ],
)
def test_destinations(entry: str, expected: Destination) -> None:
    """IPv4, bracketed IPv6 and names, split on the last colon."""
    assert parse_destination(entry) == expected


@pytest.mark.parametrize(
    "entry", ["203.0.113.130", ":5555", "[]:5555", "host:", "host:abc", "host:0", "host:70000"]
)
def test_malformed_destinations(entry: str) -> None:
    """An entry without a usable host and port is refused."""
    with pytest.raises(ValueError):
        parse_destination(entry)


def test_targets_round_robin_and_skip_bad_entries(caplog: pytest.LogCaptureFixture) -> None:
    """Good entries in turn; a malformed one is skipped with one log line, not the rest of the list."""
    targets = Targets()
    entries = ("127.0.0.1:1000", "broken", "127.0.0.1:1001")
    with caplog.at_level(logging.ERROR):
        seen = [targets.next(entries) for _ in range(4)]
    assert [target[1][1] for target in seen if target] == [1000, 1001, 1000, 1001]
    assert [r.getMessage() for r in caplog.records] == [
        "controller_ip_port_list: skipping 'broken' is not ip:port"
    ]
    assert targets.next(("[::1]:2000",)) == (socket.AF_INET6, ("::1", 2000, 0, 0))
    assert targets.next(()) is None


def test_keepalived_gate(tmp_path: Path) -> None:
    """Silent while keepalived is configured and its pid file is missing, stale or names another process."""
    assert sender.keepalived_down(Layout(tmp_path, tmp_path / "certs")) is None
    conf = tmp_path / Path("vrrp/octavia-keepalived.conf")
    conf.parent.mkdir()
    conf.write_text("vrrp_instance x {}\n")
    assert "missing" in (sender.keepalived_down(Layout(tmp_path, tmp_path / "certs")) or "")
    pid_file = tmp_path / Path("vrrp/octavia-keepalived.pid")
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not keepalived (a recycled pid)
    assert "not running" in (sender.keepalived_down(Layout(tmp_path, tmp_path / "certs")) or "")
    pid_file.write_text("not a pid\n")
    assert sender.keepalived_down(Layout(tmp_path, tmp_path / "certs")) is not None


def test_beats_are_signed_numbered_and_persisted(tmp_path: Path, receiver: socket.socket) -> None:
    """Each beat decodes with the key; seq and counters survive a new sender (an agent restart)."""
    beating, _ = _sender(_settings(tmp_path, _address(receiver)), is_running=False)
    seqs = []
    for _ in range(2):
        assert beating.beat_once() is not None
        message = codec.decode(receiver.recv(70000), KEY)
        assert message["id"] == AMP_ID and message["listeners"] == {}
        seqs.append(message["seq"])
    again, _ = _sender(_settings(tmp_path, _address(receiver)), is_running=False)
    again.beat_once()
    seqs.append(codec.decode(receiver.recv(70000), KEY)["seq"])
    assert seqs == [0, 1, 2]
    assert (tmp_path / sender.SEQ_FILE).read_text() == "2\n"
    assert (tmp_path / sender.SEQ_FILE).stat().st_mode & 0o777 == 0o640


def test_state_file_format_and_corruption(tmp_path: Path) -> None:
    """stats_counters.json holds the reference layout (mode 0640); a corrupt file means starting from zero."""
    state = sender.HeartbeatState(tmp_path)
    assert (state.counters, state.next_seq) == ({}, 0)
    state.save(41, {"l1": {"bin": 1, "bout": 2, "ereq": 0, "stot": 3}})
    path = tmp_path / sender.COUNTERS_FILE
    assert json.loads(path.read_text()) == {"l1": {"bin": 1, "bout": 2, "ereq": 0, "stot": 3}}
    assert path.stat().st_mode & 0o777 == 0o640
    reloaded = sender.HeartbeatState(tmp_path)
    assert (reloaded.counters, reloaded.next_seq) == ({"l1": {"bin": 1, "bout": 2, "ereq": 0, "stot": 3}}, 42)
    path.write_text("{not json")
    assert sender.HeartbeatState(tmp_path).counters == {}


def test_a_failed_write_does_not_stop_the_beat(tmp_path: Path, receiver: socket.socket) -> None:
    """When the state cannot be written the heartbeat still goes out, and the write is retried next beat."""
    (tmp_path / sender.SEQ_FILE).mkdir()  # os.replace onto a directory fails
    beating, _ = _sender(_settings(tmp_path, _address(receiver)), is_running=False)
    assert beating.beat_once() is not None
    assert codec.decode(receiver.recv(70000), KEY)["seq"] == 0
    (tmp_path / sender.SEQ_FILE).rmdir()
    assert beating.beat_once() is not None
    assert codec.decode(receiver.recv(70000), KEY)["seq"] == 1
    assert (tmp_path / sender.SEQ_FILE).read_text() == "1\n"
    assert json.loads((tmp_path / sender.COUNTERS_FILE).read_text()) == {}


@pytest.mark.parametrize(
    ("changes", "logged"),
    [
        ({"amphora_id": None}, "amphora_id is not set"),
        ({"heartbeat_key": None}, "heartbeat_key is not set"),
        ({"controller_ip_port_list": ()}, sender.NO_CONTROLLER),
    ],
)
def test_missing_settings_silence_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, changes: dict[str, object], logged: str
) -> None:
    """No amphora id, key or controller: no datagram, no crash, and the reason logged once."""
    settings = dataclasses.replace(_settings(tmp_path, "127.0.0.1:9"), **changes)  # type: ignore[arg-type]
    beating, _ = _sender(settings)
    with caplog.at_level(logging.INFO, logger="amphora_agent.health.sender"):
        assert beating.beat_once() is None
        assert beating.beat_once() is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and logged in messages[0]
    assert not (tmp_path / sender.SEQ_FILE).exists()


def _serve_stats(path: Path, stop: threading.Event) -> threading.Thread:
    """A stats socket answering the fixture's show stat captures (a fake haproxy)."""
    answers = {samples.SHOW_STAT_ALL: (FIXTURES / "heartbeat" / "show-stat-1.csv").read_bytes()}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.1)

    def loop() -> None:
        with server:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    command = conn.recv(1024).decode().strip()
                    conn.sendall(answers.get(command, b"Unknown command\n"))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_collect_reads_every_running_lb_and_survives_a_silent_one(tmp_path: Path) -> None:
    """One LB answering the fixture gives its 4 listeners; one without a socket adds nothing, marked."""
    layout = Layout(tmp_path, tmp_path / "certs")
    for lb_id in (LB_ID, "00000000-0000-4000-8000-000000000000"):
        (tmp_path / lb_id).mkdir()
        (tmp_path / lb_id / "haproxy.cfg").write_text("global\n")
    stop = threading.Event()
    thread = _serve_stats(layout.stats_socket(LB_ID), stop)
    try:
        sample = sender.collect_haproxy(layout, lambda _lb: True, timeout=1)
    finally:
        stop.set()
        thread.join(5)
    assert len(sample.listeners) == 4 and len(sample.pools) == 6
    assert not sample.complete
    assert sender.collect_haproxy(layout, lambda _lb: False).listeners == {}


def test_config_change_retargets_and_rekeys_the_next_beat(tmp_path: Path, receiver: socket.socket) -> None:
    """After a live change of list, key and interval the next beat goes to the new target with the new key."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
        second.bind(("127.0.0.1", 0))
        second.settimeout(5)
        settings = _settings(tmp_path, _address(receiver), heartbeat_interval=3600)
        beating, live = _sender(settings, is_running=False)

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(beating.run(stop))
            first = await asyncio.to_thread(receiver.recv, 70000)
            assert codec.decode(first, KEY)["seq"] == 0
            changed = dataclasses.replace(
                settings,
                controller_ip_port_list=(_address(second),),
                heartbeat_key="new-key",
                heartbeat_interval=1,
            )
            await asyncio.to_thread(live.replace, changed)  # as PUT /1.0/config does, from a worker thread
            nxt = await asyncio.wait_for(asyncio.to_thread(second.recv, 70000), 4)
            assert codec.decode(nxt, "new-key")["seq"] == 1
            with pytest.raises(codec.HeartbeatRejected):
                codec.decode(nxt, KEY)
            stop.set()
            await asyncio.wait_for(task, 3)

        asyncio.run(scenario())


def test_run_stops_promptly_on_the_event(tmp_path: Path) -> None:
    """The task ends as soon as the stop event is set, even in the middle of a long interval."""
    beating, _ = _sender(_settings(tmp_path, "127.0.0.1:9", heartbeat_interval=3600), is_running=False)

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(beating.run(stop))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop.set()
        await asyncio.wait_for(task, 3)
        return loop.time() - started

    assert asyncio.run(scenario()) < 0.5


def test_listen_prints_accepted_and_reports_dropped(receiver: socket.socket) -> None:
    """The operator command prints a decoded heartbeat and says why a bad one was dropped."""
    message = json.loads((FIXTURES / "heartbeat" / "message-1.json").read_bytes())
    good = codec.wrap(codec.encode(message), KEY)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(codec.wrap(codec.encode(message), "wrong"), receiver.getsockname())
        client.sendto(good, receiver.getsockname())
    out, err = io.StringIO(), io.StringIO()
    assert heartbeat_listener.listen(receiver, KEY, out, err, count=1, timeout=5) == 1
    text = out.getvalue()
    assert f"amphora {AMP_ID} seq 0 ver 3, 4 listener(s), 6 pool(s)" in text
    assert (
        "listener 6ecbef6c-ef23-4cbb-ab12-ca7118390d04 OPEN tx=1398 rx=520 conns=1 totconns=10 ereq=1" in text
    )
    assert "member 29e3fb5f-6d24-4726-aa0f-36cbc35ad16d MAINT" in text
    assert "dropped: Bad heartbeat digest" in err.getvalue()


def test_listen_command_end_to_end(receiver: socket.socket) -> None:
    """``amphoractl heartbeat listen --json --count 1`` prints one heartbeat and exits 0."""
    port = receiver.getsockname()[1]
    receiver.close()  # free the port for the command
    command = [
        sys.executable,
        "-m",
        "amphora_agent.ctl",
        "heartbeat",
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        [*command, "--json", "--count", "1", "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "AMPHORA_HEARTBEAT_KEY": KEY},
    )
    try:
        datagram = codec.wrap(
            codec.encode({"id": AMP_ID, "seq": 3, "listeners": {}, "pools": {}, "ver": 3}), KEY
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(50):  # until the command has bound the port
                client.sendto(datagram, ("127.0.0.1", port))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
                    break
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait(5)
    assert proc.returncode == 0, err
    line = json.loads(out.decode().splitlines()[0])
    assert line["message"]["seq"] == 3 and line["from"].startswith("127.0.0.1:")

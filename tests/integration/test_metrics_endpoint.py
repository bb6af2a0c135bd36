"""The metrics listener's thread in a real namespace, in this process: start, port taken, re-created, stop."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import time
from collections.abc import Iterator

import pytest

from amphora_agent.metrics import endpoint
from amphora_agent.metrics.scrape import Scraper
from amphora_agent.system import netns
from lab import namespaces

pytestmark = pytest.mark.integration
ADDRESS = ("127.0.0.1", 9102)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace with ``lo`` up, deleted afterwards."""
    name = f"mx{os.getpid() % 100000}"
    netns.ensure(name)
    try:
        yield name
    finally:
        namespaces.sh("ip", "netns", "del", name, check=False)


def status_inside(name: str) -> int:
    """The status of GET 127.0.0.1:9102/metrics inside ``name`` (haproxy's exporter is absent: 502)."""

    def get() -> int:
        conn = http.client.HTTPConnection(*ADDRESS, timeout=5)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().status
        finally:
            conn.close()

    return netns.call_in(name, get)


def answers(name: str) -> bool:
    """Whether the endpoint answers inside ``name``."""
    with contextlib.suppress(OSError):
        return status_inside(name) == 502
    return False


def test_the_thread_serves_in_the_namespace_and_moves_to_a_recreated_one(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served inside the namespace only; after delete + add, a new thread serves the new namespace."""
    monkeypatch.setattr(endpoint, "BIND_RETRY", 0.1)
    metrics = endpoint.MetricsEndpoint(lambda: namespace, Scraper(exporter=("127.0.0.1", 9)))
    try:
        metrics.follow()
        first = metrics.thread
        assert first is not None and first.listening.wait(5)
        assert status_inside(namespace) == 502
        with socket.socket() as here, pytest.raises(ConnectionRefusedError):
            here.connect(ADDRESS)  # not in the caller's namespace
        metrics.follow()
        assert metrics.thread is first  # nothing changed: the same thread

        namespaces.sh("ip", "netns", "del", namespace)
        netns.ensure(namespace)
        metrics.follow()
        assert metrics.thread is not first and metrics.thread is not None
        first.join(5)
        assert not first.is_alive()
        assert namespaces.wait_until(lambda: answers(namespace), 5)
    finally:
        metrics.close()
    assert not namespaces.wait_until(lambda: answers(namespace), 0.5)


def test_a_taken_port_is_retried_until_free(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old proxy still on 127.0.0.1:9102: the thread waits, then takes the port once it is free."""
    monkeypatch.setattr(endpoint, "BIND_RETRY", 0.1)
    taken = netns.call_in(namespace, lambda: socket.create_server(ADDRESS))
    metrics = endpoint.MetricsEndpoint(lambda: namespace, Scraper(exporter=("127.0.0.1", 9)))
    try:
        metrics.follow()
        assert metrics.thread is not None
        assert not metrics.thread.listening.wait(0.5)
        taken.close()
        assert metrics.thread.listening.wait(5)
        assert status_inside(namespace) == 502
    finally:
        taken.close()
        metrics.close()


def test_no_namespace_no_thread_and_run_stops_on_the_event() -> None:
    """Without the namespace nothing is started; ``run`` ends when the agent's stop event is set."""
    metrics = endpoint.MetricsEndpoint(lambda: "no-such-namespace", Scraper(), interval=0.05)

    async def run() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(metrics.run(stop))
        await asyncio.sleep(0.2)
        assert metrics.thread is None
        started = time.monotonic()
        stop.set()
        await task
        return time.monotonic() - started

    assert asyncio.run(run()) < 1.0

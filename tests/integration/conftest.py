"""Fixtures for tests that run real agents in namespaces that play amphorae."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import namespaces

pytestmark = pytest.mark.integration


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short path (unix sockets allow 108 bytes) removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="amp") as path:
        yield Path(path)


@pytest.fixture
def amphora(workdir: Path) -> Iterator[namespaces.Amphora]:
    """A running agent in its own amphora namespace; everything it started is killed after."""
    amp = namespaces.Amphora(workdir).create()
    try:
        amp.start_agent()
        yield amp
    finally:
        amp.destroy()


@pytest.fixture
def backends() -> Iterator[namespaces.Backends]:
    """Member servers, killed by PID after the test."""
    members = namespaces.Backends()
    try:
        yield members
    finally:
        members.stop()

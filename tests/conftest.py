"""Shared test set-up: the suite runs in a network namespace of its own, so no test touches the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import namespaces

FIXTURES = Path(__file__).resolve().parent / "data" / "controller"  # rendered by the controller (README)

IS_ROOT = os.geteuid() == 0
if IS_ROOT:
    namespaces.isolate()  # before pytest starts any thread


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests need root (namespaces, haproxy): skip them, with the reason, without it."""
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The controller fixtures (configs, certificates, requests, heartbeats)."""
    return FIXTURES

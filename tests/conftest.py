"""Shared test set-up: the suite runs in a network namespace of its own, so no test touches the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amphora_agent import lab

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "controller"
if not FIXTURES.is_dir():  # CI lays shared/ beside the clone; a work tree may sit elsewhere
    FIXTURES = Path(os.environ.get("AMPHORA_FIXTURES", "/work/shared/fixtures/controller"))

IS_ROOT = os.geteuid() == 0
if IS_ROOT:
    lab.isolate()  # before pytest starts any thread


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
    if not FIXTURES.is_dir():
        pytest.fail(f"controller fixtures not found at {FIXTURES}")
    return FIXTURES

"""Options documented as live are live in the daemon: ``log_config_append`` and ``debug``."""

from __future__ import annotations

import pytest

from lab import namespaces
from tests.api.test_agent_config import LOGGING_INI

pytestmark = pytest.mark.integration
UNKNOWN_LB = "deadbeef-0000-4000-8000-000000000000"


def push(amp: namespaces.Amphora) -> None:
    """PUT /1.0/config with the amphora's current sections (``extra_config`` included)."""
    body = "".join(
        f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
        for section, values in amp.config_sections().items()
    )
    with amp.client() as api:
        reply = api.put("/1.0/config", content=body.encode())
        assert reply.status_code == 202, reply.text


def provoke(amp: namespaces.Amphora, marker: str) -> None:
    """One WARNING line in the agent's log naming ``marker`` (a 400: an unknown action)."""
    with amp.client() as api:
        assert api.put(f"/1.0/loadbalancer/{UNKNOWN_LB}/{marker}").status_code == 400


def test_log_config_append_is_applied_and_removed_live(amphora: namespaces.Amphora) -> None:
    """Set: the agent logs through that file's handlers at once; unset: back to its default log."""
    extra = amphora.workdir / "extra.log"
    (amphora.workdir / "logging.ini").write_text(LOGGING_INI.format(log=extra))
    amphora.extra_config["DEFAULT"] = {"log_config_append": str(amphora.workdir / "logging.ini")}
    push(amphora)
    provoke(amphora, "first-marker")
    assert namespaces.wait_until(lambda: extra.exists() and "first-marker" in extra.read_text(), 5)
    assert "extra WARNING amphora_agent.api" in extra.read_text()
    assert "first-marker" not in amphora.log_file.read_text()

    amphora.extra_config["DEFAULT"] = {"log_config_append": ""}
    push(amphora)
    provoke(amphora, "second-marker")
    assert namespaces.wait_until(lambda: "second-marker" in amphora.log_file.read_text(), 5)
    assert "second-marker" not in extra.read_text()

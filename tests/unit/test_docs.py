"""The generated documents in docs/ match their sources (settings, OpenAPI, amphoractl, metrics tables)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    """scripts/gen_docs.py as a module."""
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["configuration.md", "api.md", "amphoractl.md", "metrics-families.md"])
def test_generated_doc_is_up_to_date(name: str) -> None:
    """docs/<name> is what scripts/gen_docs.py writes now (run it after changing the source)."""
    render = generator().TARGETS[name]
    assert (ROOT / "docs" / name).read_text(encoding="utf-8") == render(), (
        f"docs/{name} is out of date: run .venv/bin/python scripts/gen_docs.py"
    )


def test_configuration_reference_lists_every_option() -> None:
    """Each option of the registry appears, in its section, with whether it changes live."""
    from amphora_agent.settings import OPTIONS

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for group, name in OPTIONS:
        section = text.split(f"## [{group}]", 1)[1].split("\n## ", 1)[0]
        assert f"| `{name}` |" in section
    assert text.count("| **yes** |") == sum(1 for _, option in OPTIONS.values() if option.mutable)

"""``amphoractl``: drive and inspect an amphora agent from a shell (typer + rich on the typed client)."""

from __future__ import annotations

import sys


def main() -> None:
    """The ``amphoractl`` console script."""
    # On import, httpx also loads its own command-line tool (click, rich.syntax, pygments: about 70 ms)
    # unless that import fails; amphoractl never uses it, so mark it absent for this process only.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from amphora_agent.ctl.app import app

    app(prog_name="amphoractl")

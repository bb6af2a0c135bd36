"""``amphoractl heartbeat listen``: receive, verify, decode and print the agent's UDP heartbeats.

The checks are the health manager's (``heartbeat_codec``: HMAC, bounded inflate, message schema),
shared with the ``amphora-heartbeat-listen`` command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from amphora_agent.ctl import render
from amphora_agent.ctl.app import JsonOpt, fail, heartbeat_app, json_mode


@heartbeat_app.command("listen")
def listen(
    ctx: typer.Context,
    bind: Annotated[str, typer.Option(help="Address to listen on ('::' takes IPv4 too).")] = "::",
    port: Annotated[int, typer.Option(help="UDP port (the health manager's).")] = 5555,
    key: Annotated[
        str | None,
        typer.Option(
            envvar=["AMPHORA_HEARTBEAT_KEY", "HEARTBEAT_KEY"], help="[health_manager] heartbeat_key."
        ),
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="A file holding the heartbeat_key.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many heartbeats.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="Stop after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print heartbeats as they arrive (one JSON line each with --json); drops go to stderr.

    Exits 1 when --count heartbeats were not accepted before --timeout.
    """
    from amphora_agent.ctl import heartbeat_listener

    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            fail(ctx, render.EXIT_USAGE, None, f"cannot read {key_file}", str(exc))
    if not key:
        fail(ctx, render.EXIT_USAGE, None, "a key is needed", "--key, --key-file or AMPHORA_HEARTBEAT_KEY")
    try:
        sock = heartbeat_listener.open_socket(bind, port)
    except OSError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"cannot listen on [{bind}]:{port}", str(exc))
    with sock:
        try:
            accepted = heartbeat_listener.listen(
                sock,
                key,
                sys.stdout,
                sys.stderr,
                as_json=json_mode(ctx, as_json),
                count=count,
                timeout=timeout,
            )
        except KeyboardInterrupt:
            return
    if count is not None and accepted < count:
        raise typer.Exit(render.EXIT_AGENT_ERROR)

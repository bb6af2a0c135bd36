"""The amphoractl commands: one per route of the agent API, plus a heartbeat listener.

Connection settings come from options or environment variables; the client (httpx) is imported only
when a command talks to the agent.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from amphora_agent.ctl import render

if TYPE_CHECKING:
    from amphora_agent.client import AgentClient, Connection

T = TypeVar("T")

HELP = """Drive and inspect an amphora agent over mutual TLS.

Exit codes: 0 success, 1 the agent answered an error (its message and details are printed),
2 bad usage or unreadable input, 3 the agent could not be reached (after the retries)."""

app = typer.Typer(
    name="amphoractl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
lb_app = typer.Typer(help="haproxy load balancers: upload, read, start, stop, reload, delete.")
cert_app = typer.Typer(help="Tenant TLS material of a load balancer.")
plug_app = typer.Typer(help="Plug hot-added ports into the amphora namespace.")
vrrp_app = typer.Typer(help="keepalived VRRP (ACTIVE_STANDBY).")
udp_app = typer.Typer(help="keepalived LVS configs of UDP and SCTP listeners.")
config_app = typer.Typer(help="The agent's own configuration file.")
server_cert_app = typer.Typer(help="The agent's own server certificate.")
heartbeat_app = typer.Typer(help="Heartbeats the agent sends to the health managers.")
for _name, _sub in (
    ("lb", lb_app),
    ("cert", cert_app),
    ("plug", plug_app),
    ("vrrp", vrrp_app),
    ("udp", udp_app),
    ("config", config_app),
    ("server-cert", server_cert_app),
    ("heartbeat", heartbeat_app),
):
    app.add_typer(_sub, name=_name, no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
LbId = Annotated[str, typer.Argument(help="Load balancer id.", show_default=False)]
InFile = Annotated[Path, typer.Argument(help="Input file ('-' for stdin).", show_default=False)]


@dataclass
class Options:
    """The connection settings and output mode given before the command."""

    url: str
    amphora_id: str | None
    ca: Path | None
    cert: Path | None
    key: Path | None
    connect_timeout: float
    read_timeout: float
    retries: int
    retry_interval: float
    json: bool

    def connection(self) -> Connection:
        """The client's connection settings."""
        from amphora_agent.client import Connection, RetryPolicy

        return Connection(
            url=self.url,
            amphora_id=self.amphora_id,
            ca=self.ca,
            client_cert=self.cert,
            client_key=self.key,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retry=RetryPolicy(self.retries, self.retry_interval),
            user_agent="amphoractl",  # no version: looking it up costs ~40 ms per run
        )


def _show_version(value: bool) -> None:
    if value:
        from amphora_agent import __version__

        sys.stdout.write(f"amphoractl {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="AMPHORA_URL", help="The agent's URL, e.g. https://[2001:db8::2]:9443.")
    ] = "https://127.0.0.1:9443",
    amphora_id: Annotated[
        str | None,
        typer.Option(envvar="AMPHORA_ID", help="Amphora id: the name the agent's certificate must carry."),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(envvar="AMPHORA_CA", help="CA that signed the agent's certificate.")
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            envvar="AMPHORA_CLIENT_CERT", help="Client certificate (PEM, with its key unless --key)."
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(envvar="AMPHORA_CLIENT_KEY", help="Client key, when not in --cert.")
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option(envvar="AMPHORA_CONNECT_TIMEOUT", help="Seconds to connect.")
    ] = 10.0,
    read_timeout: Annotated[
        float, typer.Option(envvar="AMPHORA_READ_TIMEOUT", help="Seconds to wait for an answer.")
    ] = 60.0,
    retries: Annotated[
        int, typer.Option(envvar="AMPHORA_RETRIES", min=1, help="Attempts, as the controller retries.")
    ] = 3,
    retry_interval: Annotated[
        float, typer.Option(envvar="AMPHORA_RETRY_INTERVAL", min=0.0, help="Seconds between attempts.")
    ] = 1.0,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log retries on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Connection settings (options or AMPHORA_* environment variables)."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    ctx.obj = Options(
        url, amphora_id, ca, cert, key, connect_timeout, read_timeout, retries, retry_interval, as_json
    )


def _options(ctx: typer.Context) -> Options:
    options = ctx.find_object(Options)
    assert options is not None, "the main callback always runs first"
    return options


def json_mode(ctx: typer.Context, as_json: bool = False) -> bool:
    """``--json`` given before the command or to the command itself."""
    return as_json or bool(ctx.params.get("as_json")) or _options(ctx).json


def fail(
    ctx: typer.Context, code: int, status: int | None, message: str, details: str | None = None
) -> NoReturn:
    """Print an error and exit with ``code``."""
    render.error(status, message, details, json_mode(ctx))
    raise typer.Exit(code)


def call(ctx: typer.Context, action: Callable[[AgentClient], T]) -> T:
    """Run ``action`` with a client; agent errors and failures become a message and an exit code."""
    from amphora_agent.client import AgentAPIError, AgentClient, AgentUnreachable, ClientError

    try:
        with AgentClient(_options(ctx).connection()) as api:
            return action(api)
    except AgentAPIError as exc:
        fail(ctx, render.EXIT_AGENT_ERROR, exc.status, exc.message, exc.details)
    except AgentUnreachable as exc:
        fail(ctx, render.EXIT_UNREACHABLE, None, "agent unreachable", str(exc))
    except ClientError as exc:
        fail(ctx, render.EXIT_USAGE, None, str(exc))


def read_input(ctx: typer.Context, path: Path) -> bytes:
    """The bytes of ``path`` (stdin for ``-``); an unreadable file exits with 2."""
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"cannot read {path}", str(exc))


def read_json(ctx: typer.Context, path: Path) -> Any:
    """A JSON document from ``path``."""
    try:
        return json.loads(read_input(ctx, path))
    except ValueError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"{path} is not JSON", str(exc))


def show_reply(ctx: typer.Context, as_json: bool, action: Callable[[AgentClient], Any]) -> None:
    """Run an action that answers ``{"message": "OK", ...}`` and print that answer."""
    result = call(ctx, action)
    render.reply(result.as_dict(), json_mode(ctx, as_json))


# The commands live in their own modules; importing them registers them with ``app``.
from amphora_agent.ctl import commands, heartbeats, metrics, network  # noqa: E402

__all__ = ["app", "commands", "heartbeats", "metrics", "network"]

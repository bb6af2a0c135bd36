"""amphoractl commands for discovery, load balancers, certificates, agent config and keepalived."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from amphora_agent.ctl import render
from amphora_agent.ctl.app import (
    InFile,
    JsonOpt,
    LbId,
    app,
    call,
    cert_app,
    config_app,
    fail,
    json_mode,
    lb_app,
    read_input,
    server_cert_app,
    show_reply,
    udp_app,
    vrrp_app,
)
from amphora_agent.validation import ACTIONS


# -- discovery ---------------------------------------------------------------------------------
@app.command()
def info(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Host name, amphora id and versions (GET /1.0/info)."""
    data = call(ctx, lambda api: api.info())
    if json_mode(ctx, as_json):
        render.emit_json(data)
    else:
        render.key_values("amphora info", dict(data))


@app.command()
def details(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Host figures, versions and listeners (GET /1.0/details)."""
    data = call(ctx, lambda api: api.details())
    if json_mode(ctx, as_json):
        render.emit_json(data)
    else:
        render.key_values("amphora details", data, expand=("cpu", "memory", "disk", "networks"))


@app.command()
def listeners(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every listener with its status and type (GET /1.0/listeners)."""
    rows = call(ctx, lambda api: api.listeners())
    if json_mode(ctx, as_json):
        render.emit_json([{"status": r.status, "uuid": r.uuid, "type": r.type} for r in rows])
    else:
        render.rows("listeners", ("UUID", "TYPE", "STATUS"), [(r.uuid, r.type, r.status) for r in rows])


@app.command("api-version")
def api_version(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The API version the agent speaks (GET /)."""
    version = call(ctx, lambda api: api.api_version())
    if json_mode(ctx, as_json):
        render.emit_json({"api_version": version})
    else:
        sys.stdout.write(version + "\n")


@app.command()
def openapi(ctx: typer.Context) -> None:
    """The OpenAPI document the agent serves (GET /1.0/openapi.yaml)."""
    sys.stdout.write(call(ctx, lambda api: api.openapi()))


# -- load balancers ----------------------------------------------------------------------------
@lb_app.command("upload")
def lb_upload(
    ctx: typer.Context,
    lb_id: LbId,
    config: Annotated[Path, typer.Argument(help="haproxy.cfg ('-' for stdin).", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check and store a load balancer's haproxy.cfg (nothing is restarted)."""
    body = read_input(ctx, config)
    show_reply(ctx, as_json, lambda api: api.put_haproxy_config(lb_id, body))


@lb_app.command("get")
def lb_get(
    ctx: typer.Context,
    lb_id: LbId,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Print (or save) the stored haproxy.cfg."""
    text = call(ctx, lambda api: api.get_haproxy_config(lb_id))
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"cannot write {output}", str(exc))


def _lb_action(action: str) -> Callable[..., None]:
    def command(ctx: typer.Context, lb_id: LbId, as_json: JsonOpt = False) -> None:
        show_reply(ctx, as_json, lambda api: api.loadbalancer_action(lb_id, action))

    return command


for _action in ACTIONS:
    lb_app.command(_action, help=f"{_action.capitalize()} the haproxy of a load balancer.")(
        _lb_action(_action)
    )


@lb_app.command("delete")
def lb_delete(ctx: typer.Context, lb_id: LbId, as_json: JsonOpt = False) -> None:
    """Stop a load balancer and remove everything it had (also LVS listener ids)."""
    show_reply(ctx, as_json, lambda api: api.delete_listener(lb_id))


# -- certificates ------------------------------------------------------------------------------
PemName = Annotated[str, typer.Argument(help="PEM file name on the amphora.", show_default=False)]


@cert_app.command("put")
def cert_put(
    ctx: typer.Context,
    lb_id: LbId,
    pem: InFile,
    name: Annotated[str | None, typer.Option(help="Name on the amphora (default: the file's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a tenant PEM (certificate + key + chain, CA, CRL or crt-list)."""
    body = read_input(ctx, pem)
    filename = name or pem.name
    show_reply(ctx, as_json, lambda api: api.put_certificate(lb_id, filename, body))


@cert_app.command("md5")
def cert_md5(ctx: typer.Context, lb_id: LbId, name: PemName, as_json: JsonOpt = False) -> None:
    """The md5 of a stored tenant PEM."""
    digest = call(ctx, lambda api: api.certificate_md5(lb_id, name))
    if json_mode(ctx, as_json):
        render.emit_json({"md5sum": digest})
    else:
        sys.stdout.write(digest + "\n")


@cert_app.command("delete")
def cert_delete(ctx: typer.Context, lb_id: LbId, name: PemName, as_json: JsonOpt = False) -> None:
    """Delete a tenant PEM."""
    show_reply(ctx, as_json, lambda api: api.delete_certificate(lb_id, name))


@server_cert_app.command("rotate")
def server_cert_rotate(ctx: typer.Context, pem: InFile, as_json: JsonOpt = False) -> None:
    """Replace the agent's server certificate (certificate + key, CN = amphora id); no restart."""
    body = read_input(ctx, pem)
    show_reply(ctx, as_json, lambda api: api.rotate_server_certificate(body))


@config_app.command("push")
def config_push(ctx: typer.Context, config: InFile, as_json: JsonOpt = False) -> None:
    """Replace the agent's INI file; the mutable options apply at once."""
    body = read_input(ctx, config)
    show_reply(ctx, as_json, lambda api: api.put_agent_config(body))


# -- keepalived --------------------------------------------------------------------------------
@vrrp_app.command("upload")
def vrrp_upload(ctx: typer.Context, config: InFile, as_json: JsonOpt = False) -> None:
    """Check and store the keepalived VRRP config."""
    body = read_input(ctx, config)
    show_reply(ctx, as_json, lambda api: api.put_vrrp_config(body))


def _vrrp_action(action: str) -> Callable[..., None]:
    def command(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        show_reply(ctx, as_json, lambda api: api.vrrp_action(action))

    return command


for _action in ACTIONS:
    vrrp_app.command(_action, help=f"{_action.capitalize()} keepalived (VRRP).")(_vrrp_action(_action))

ListenerId = Annotated[str, typer.Argument(help="UDP or SCTP listener id.", show_default=False)]


@udp_app.command("upload")
def udp_upload(ctx: typer.Context, listener_id: ListenerId, config: InFile, as_json: JsonOpt = False) -> None:
    """Check and store the keepalived LVS config of a UDP/SCTP listener."""
    body = read_input(ctx, config)
    show_reply(ctx, as_json, lambda api: api.put_udp_listener(listener_id, body))


@udp_app.command("get")
def udp_get(ctx: typer.Context, listener_id: ListenerId) -> None:
    """Print the stored LVS config of a listener."""
    sys.stdout.write(call(ctx, lambda api: api.get_udp_listener(listener_id)))

"""amphoractl commands for ports and interfaces: plug vip, plug network, interface, interface-rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from amphora_agent.ctl import render
from amphora_agent.ctl.app import JsonOpt, app, call, fail, json_mode, plug_app, read_json, show_reply

BodyOpt = Annotated[
    Path | None,
    typer.Option(
        "--body", help="A JSON body to start from (e.g. the controller's request); options override."
    ),
]
MacOpt = Annotated[str | None, typer.Option("--mac", help="MAC address of the hot-plugged port.")]
MtuOpt = Annotated[int | None, typer.Option(help="MTU of the port.")]
SriovOpt = Annotated[bool | None, typer.Option("--sriov/--no-sriov", help="The port is an SR-IOV VF.")]


def _object(ctx: typer.Context, path: Path | None) -> dict[str, Any]:
    body = read_json(ctx, path) if path else {}
    if not isinstance(body, dict):
        fail(ctx, render.EXIT_USAGE, None, f"{path} must hold a JSON object")
    return body


def _pairs(ctx: typer.Context, values: list[str], names: tuple[str, ...], least: int) -> list[list[str]]:
    """``a,b[,c]`` option values split into their parts (usage error when a part is missing)."""
    parsed = []
    for value in values:
        parts = [p.strip() for p in value.split(",")]
        if not least <= len(parts) <= len(names) or not all(parts):
            fail(ctx, render.EXIT_USAGE, None, f"{value!r} is not {','.join(names)}")
        parsed.append(parts)
    return parsed


def _routes(ctx: typer.Context, values: list[str]) -> list[dict[str, str]]:
    pairs = _pairs(ctx, values, ("DESTINATION", "NEXTHOP"), 2)
    return [{"destination": d, "nexthop": n} for d, n in pairs]


@plug_app.command("vip")
def plug_vip(
    ctx: typer.Context,
    vip: Annotated[str, typer.Argument(help="The VIP address.", show_default=False)],
    subnet_cidr: Annotated[str | None, typer.Option(help="The VIP subnet, e.g. 198.51.100.0/24.")] = None,
    gateway: Annotated[str | None, typer.Option(help="The subnet's gateway.")] = None,
    mac: MacOpt = None,
    vrrp_ip: Annotated[str | None, typer.Option(help="The amphora's own address on the VIP network.")] = None,
    mtu: MtuOpt = None,
    host_route: Annotated[
        list[str] | None, typer.Option(help="DESTINATION,NEXTHOP (repeatable).", show_default=False)
    ] = None,
    sriov: SriovOpt = None,
    body: BodyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plug the VIP port (POST /1.0/plug/vip/VIP)."""
    data = _object(ctx, body)
    given: dict[str, Any] = {
        "subnet_cidr": subnet_cidr,
        "gateway": gateway,
        "mac_address": mac,
        "vrrp_ip": vrrp_ip,
        "mtu": mtu,
        "is_sriov": sriov,
    }
    data.update({k: v for k, v in given.items() if v is not None})
    if host_route:
        data["host_routes"] = _routes(ctx, host_route)
    data.setdefault("gateway", None)
    missing = [key for key in ("subnet_cidr", "mac_address") if not data.get(key)]
    if missing:
        fail(ctx, render.EXIT_USAGE, None, "missing " + " and ".join(missing), "give the options or --body")
    show_reply(ctx, as_json, lambda api: api.plug_vip(vip, data))


@plug_app.command("network")
def plug_network(
    ctx: typer.Context,
    mac: MacOpt = None,
    fixed_ip: Annotated[
        list[str] | None,
        typer.Option(help="IP,SUBNET_CIDR[,GATEWAY] (repeatable).", show_default=False),
    ] = None,
    mtu: MtuOpt = None,
    sriov: SriovOpt = None,
    body: BodyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plug a member network port (POST /1.0/plug/network)."""
    data = _object(ctx, body)
    given: dict[str, Any] = {"mac_address": mac, "mtu": mtu, "is_sriov": sriov}
    data.update({k: v for k, v in given.items() if v is not None})
    if fixed_ip:
        parts = _pairs(ctx, fixed_ip, ("IP", "SUBNET_CIDR", "GATEWAY"), 2)
        data["fixed_ips"] = [
            {
                "ip_address": p[0],
                "subnet_cidr": p[1],
                "gateway": p[2] if len(p) > 2 else None,
                "host_routes": [],
            }
            for p in parts
        ]
    if not data.get("mac_address"):
        fail(ctx, render.EXIT_USAGE, None, "missing mac_address", "give --mac or --body")
    show_reply(ctx, as_json, lambda api: api.plug_network(data))


IpArg = Annotated[str, typer.Argument(help="An address on the amphora.", show_default=False)]


@app.command()
def interface(ctx: typer.Context, ip_addr: IpArg, as_json: JsonOpt = False) -> None:
    """The amphora interface that holds an address (GET /1.0/interface/IP)."""
    name = call(ctx, lambda api: api.interface(ip_addr))
    if json_mode(ctx, as_json):
        render.emit_json({"interface": name})
    else:
        sys.stdout.write(name + "\n")


@app.command("interface-rules")
def interface_rules(
    ctx: typer.Context,
    ip_addr: IpArg,
    rules: Annotated[
        Path, typer.Argument(help="JSON list of {protocol, cidr, port} ('-' for stdin).", show_default=False)
    ],
    as_json: JsonOpt = False,
) -> None:
    """Replace the nftables allow-list of an SR-IOV VIP interface (PUT /1.0/interface/IP/rules)."""
    data = read_json(ctx, rules)
    if not isinstance(data, list):
        fail(ctx, render.EXIT_USAGE, None, f"{rules} must hold a JSON list of rules")
    show_reply(ctx, as_json, lambda api: api.put_interface_rules(ip_addr, data))

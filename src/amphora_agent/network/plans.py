"""Plug VIP and plug network as plans built from pure data.

A request body becomes a typed plug (``parse_plug_vip``, ``parse_plug_network``) with the existing
agent's 400 texts, and a plug plus the topology becomes an interface definition (``vip_interface``,
``member_interface``): the addresses, routes and source rules of reference section 7.5. Nothing here
touches the kernel, so every case is a table-driven unit test.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from amphora_agent.errors import InvalidInput
from amphora_agent.network.interfaces import BACKEND, VIP, Address, Interface, Route, Rule
from amphora_agent.settings import ACTIVE_STANDBY

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
VIP_TABLE = 1
VIP_IFNAME = "eth1"
MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
DEFAULT_DST = {4: "0.0.0.0/0", 6: "::/0"}
HOST_LEN = {4: 32, 6: 128}


class BadBody(InvalidInput):
    """A body the existing agent refuses in the framework's shape: ``400 Bad Request: <message>``."""


@dataclass(frozen=True)
class HostRoute:
    """A subnet host route: ``destination`` via ``nexthop``."""

    destination: str
    nexthop: str


@dataclass(frozen=True)
class Subnet:
    """One address on one subnet (a VIP or a fixed IP) with the subnet's gateway and host routes."""

    address: IPAddress
    network: IPNetwork
    gateway: IPAddress | None
    host_routes: tuple[HostRoute, ...] = ()


@dataclass(frozen=True)
class VipPlug:
    """``POST /1.0/plug/vip/<vip>``: the primary VIP first, then the additional VIPs."""

    mac: str
    vips: tuple[Subnet, ...]
    vrrp_ip: IPAddress | None
    mtu: int | None
    is_sriov: bool


@dataclass(frozen=True)
class NetworkPlug:
    """``POST /1.0/plug/network``; ``vip`` is set when the port is the amphora's VRRP port."""

    mac: str
    fixed_ips: tuple[Subnet, ...]
    mtu: int | None
    is_sriov: bool
    vip: VipPlug | None = None


# -- parsing -----------------------------------------------------------------------------------------
def load_object(body: bytes, message: str) -> dict[str, Any]:
    """The body as a JSON object, or BadBody(message)."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested past the parser's limit
        raise BadBody(message) from exc
    if not isinstance(data, dict):
        raise BadBody(message)
    return data


def parse_mac(value: Any) -> str:
    """A MAC address in the kernel's lower-case colon form."""
    if not isinstance(value, str) or not MAC.fullmatch(value.strip().lower()):
        raise InvalidInput("Invalid MAC address", f"{value!r} is not a MAC address like fa:16:3e:00:00:01")
    return value.strip().lower()


def parse_mtu(value: Any) -> int | None:
    """An MTU between 68 and 65535, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise InvalidInput("Invalid MTU", f"{value!r} is not an integer between 68 and 65535")
    return value


def parse_flag(value: Any, name: str) -> bool:
    """A JSON boolean (null is false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"Invalid {name}", f"{value!r} is not a boolean")
    return value


def _host_routes(value: Any) -> tuple[HostRoute, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"host_routes must be a list, not {value!r}")
    routes = []
    for item in value:
        if not isinstance(item, dict) or "destination" not in item or "nexthop" not in item:
            raise ValueError(f"a host route needs destination and nexthop: {item!r}")
        dst = ipaddress.ip_network(str(item["destination"]), strict=False)
        hop = ipaddress.ip_address(str(item["nexthop"]))
        if dst.version != hop.version:
            raise ValueError(f"host route {dst} via {hop} mixes IP versions")
        routes.append(HostRoute(dst.compressed, hop.compressed))
    return tuple(routes)


def parse_subnet(address: Any, cidr: Any, gateway: Any, host_routes: Any) -> Subnet:
    """One address on its subnet; raises ValueError with the reason."""
    if not isinstance(address, str):
        raise ValueError(f"{address!r} does not appear to be an IPv4 or IPv6 address")
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(str(cidr))  # strict: host bits set is an error, as in the reference
    if ip.version != network.version or ip not in network:
        raise ValueError(f"{ip} is not in {network}")
    gw = None
    if gateway is not None:
        gw = ipaddress.ip_address(str(gateway))
        if gw.version != ip.version:
            raise ValueError(f"gateway {gw} is not an IPv{ip.version} address")
    return Subnet(ip, network, gw, _host_routes(host_routes))


def _vip_fields(vip: str, data: dict[str, Any]) -> tuple[Subnet, ...]:
    extra = data.get("additional_vips") or []
    if not isinstance(extra, list):
        raise InvalidInput("Invalid VIP: additional_vips must be a list")
    try:
        subnets = [parse_subnet(vip, data["subnet_cidr"], data["gateway"], data.get("host_routes"))]
        for index, item in enumerate(extra):
            if not isinstance(item, dict):
                raise ValueError(f"additional_vips[{index}] is not an object")
            missing = [k for k in ("ip_address", "subnet_cidr", "gateway", "host_routes") if k not in item]
            if missing:
                raise ValueError(f"additional_vips[{index}] lacks {', '.join(missing)}")
            subnets.append(
                parse_subnet(item["ip_address"], item["subnet_cidr"], item["gateway"], item["host_routes"])
            )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"Invalid VIP: {exc}") from exc
    return tuple(subnets)


def vip_plug_from(vip: str, data: dict[str, Any]) -> VipPlug:
    """A parsed plug-VIP object (the body, or ``vip_net_info`` of a plug network)."""
    if not all(key in data for key in ("subnet_cidr", "gateway", "mac_address")):
        raise BadBody("Invalid subnet information")
    vips = _vip_fields(vip, data)
    vrrp_ip = None
    if data.get("vrrp_ip") is not None:
        try:
            vrrp_ip = ipaddress.ip_address(str(data["vrrp_ip"]))
        except ValueError as exc:
            raise InvalidInput(f"Invalid VRRP Address: {exc}") from exc
        if vrrp_ip.version != vips[0].address.version:
            raise InvalidInput(
                f"Invalid VRRP Address: {vrrp_ip} is not an IPv{vips[0].address.version} address"
            )
    return VipPlug(
        mac=parse_mac(data["mac_address"]),
        vips=vips,
        vrrp_ip=vrrp_ip,
        mtu=parse_mtu(data.get("mtu")),
        is_sriov=parse_flag(data.get("is_sriov"), "is_sriov"),
    )


def parse_plug_vip(vip: str, body: bytes) -> VipPlug:
    """Check a plug-VIP request as the existing agent does (plus MAC, MTU and gateway checks)."""
    return vip_plug_from(vip, load_object(body, "Invalid subnet information"))


def parse_plug_network(body: bytes) -> NetworkPlug:
    """Check a plug-network request; ``vip_net_info`` is checked like a plug-VIP body."""
    data = load_object(body, "Invalid port information")
    if "mac_address" not in data:
        raise BadBody("Invalid port information")
    raw = data.get("fixed_ips") or []
    if not isinstance(raw, list):
        raise InvalidInput("Invalid network port", "fixed_ips must be a list")
    fixed = []
    for item in raw:
        try:
            if not isinstance(item, dict):
                raise ValueError(f"a fixed IP must be an object: {item!r}")
            fixed.append(
                parse_subnet(
                    item["ip_address"], item["subnet_cidr"], item.get("gateway"), item.get("host_routes")
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput("Invalid network port", str(exc)) from exc
    vip = None
    info = data.get("vip_net_info")
    if info is not None:
        if not isinstance(info, dict) or "vip" not in info:
            raise InvalidInput("Invalid VIP: vip_net_info needs vip, subnet_cidr, gateway and mac_address")
        vip = vip_plug_from(str(info["vip"]), {**info, "mac_address": data["mac_address"]})
    return NetworkPlug(
        mac=parse_mac(data["mac_address"]),
        fixed_ips=tuple(fixed),
        mtu=parse_mtu(data.get("mtu")),
        is_sriov=parse_flag(data.get("is_sriov"), "is_sriov"),
        vip=vip,
    )


# -- plans -------------------------------------------------------------------------------------------
def _host_route_entries(routes: tuple[HostRoute, ...], table: int | None = None) -> list[Route]:
    return [Route(r.destination, r.nexthop, onlink=True, table=table) for r in routes]


def vip_interface(
    plug: VipPlug, topology: str, extra: tuple[Subnet, ...] = (), name: str = VIP_IFNAME
) -> Interface:
    """The VIP interface of reference 7.5; ``extra`` are the fixed IPs of a VRRP-port re-plug."""
    single = topology != ACTIVE_STANDBY
    addresses: list[Address] = []
    routes: list[Route] = []
    rules: list[Rule] = []
    families: list[int] = []
    if plug.vrrp_ip is not None:
        addresses.append(Address(plug.vrrp_ip.exploded, plug.vips[0].network.prefixlen))
    for vip in plug.vips:
        version = vip.address.version
        families += [] if version in families else [version]
        if vip.gateway is not None:
            default = Route(DEFAULT_DST[version], str(vip.gateway), onlink=True)
            routes.append(default)
            if single:
                routes.append(Route(default.dst, default.gateway, onlink=True, table=VIP_TABLE))
        addresses.append(Address(vip.address.exploded, HOST_LEN[version], octavia_owned=single))
        routes.append(Route(vip.network.exploded, scope_link=True))
        if single:
            routes.append(
                Route(vip.network.exploded, prefsrc=vip.address.exploded, scope_link=True, table=VIP_TABLE)
            )
            rules.append(Rule(vip.address.exploded, HOST_LEN[version], VIP_TABLE))
        routes += _host_route_entries(vip.host_routes)
        routes += _host_route_entries(vip.host_routes, VIP_TABLE)
    for fixed in extra:
        version = fixed.address.version
        families += [] if version in families else [version]
        addresses.append(Address(str(fixed.address), fixed.network.prefixlen))
        if fixed.gateway is not None:
            routes.append(Route(DEFAULT_DST[version], str(fixed.gateway), onlink=True))
            if single:
                routes.append(Route(DEFAULT_DST[version], str(fixed.gateway), onlink=True, table=VIP_TABLE))
        routes += _host_route_entries(fixed.host_routes)
    has = {vip.address.version for vip in plug.vips}
    no_vrrp = plug.vrrp_ip is None
    return Interface(
        name=name,
        if_type=VIP,
        addresses=tuple(addresses),
        routes=tuple(routes),
        rules=tuple(rules),
        families=tuple(sorted(families)),
        is_sriov=plug.is_sriov,
        mtu=plug.mtu,
        dhcp=no_vrrp and 4 in has,
        ipv6auto=no_vrrp and 6 in has,
        mac=plug.mac,
    )


def member_interface(plug: NetworkPlug, name: str) -> Interface:
    """A member port (reference 7.4 ``backend``): fixed IPs and host routes; gateways are not used."""
    addresses = tuple(Address(str(f.address), f.network.prefixlen) for f in plug.fixed_ips)
    routes: list[Route] = []
    for fixed in plug.fixed_ips:
        routes += _host_route_entries(fixed.host_routes)
    families = sorted({f.address.version for f in plug.fixed_ips}) or [4, 6]
    return Interface(
        name=name,
        if_type=BACKEND,
        addresses=addresses,
        routes=tuple(routes),
        families=tuple(families),
        is_sriov=plug.is_sriov,
        mtu=plug.mtu,
        dhcp=not plug.fixed_ips,
        ipv6auto=not plug.fixed_ips,
        mac=plug.mac,
    )


def announced(iface: Interface) -> list[str]:
    """The addresses to announce (GARP / unsolicited NA) after the interface is up."""
    return [a.address for a in iface.addresses if a.managed]


def lowest_free_name(used: set[str], start: int = 2) -> str:
    """The lowest ``ethN`` with N >= ``start`` that is not in ``used``."""
    n = start
    while f"eth{n}" in used:
        n += 1
    return f"eth{n}"


def plugged_details(plug: VipPlug, name: str = VIP_IFNAME) -> str:
    """The 202 details of a VIP plug: every VIP in exploded form, as the existing agent writes them."""
    return f"VIPs plugged on interface {name}: " + ", ".join(v.address.exploded for v in plug.vips)

"""Interface definitions: what one NIC in the haproxy namespace should look like, stored as JSON.

The file format is the existing agent's ``/etc/octavia/interfaces/<name>.json`` (``name``, ``if_type``,
``addresses``, ``routes``, ``rules``, ``scripts``, ``is_sriov``, ``mtu``), so a definition written by
either agent reads back in the other. ``<base>/plugged_interfaces`` pairs each MAC with its name; both
are what brings the interfaces back after a reboot. Everything here is pure data except the store.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amphora_agent.errors import InvalidInput
from amphora_agent.system import files
from amphora_agent.system.netlink import RouteKey, RuleKey

VIP = "vip"
BACKEND = "backend"
MAIN_TABLE = 254
MASQUERADE = "/usr/local/bin/lvs-masquerade.sh"
_SCRIPT = re.compile(rf"{re.escape(MASQUERADE)} (add|delete) ipv(4|6) \S+( sriov)?")


def norm_ip(text: str | None) -> str | None:
    """An address in compressed form (``None`` stays ``None``)."""
    return None if text is None else ipaddress.ip_address(text).compressed


def norm_net(text: str) -> str:
    """A network in compressed ``addr/len`` form, host bits cleared."""
    return ipaddress.ip_network(text, strict=False).compressed


def version_of(text: str) -> int:
    """4 or 6, for an address or a network."""
    return ipaddress.ip_network(text, strict=False).version


@dataclass(frozen=True)
class Address:
    """A static address; ``octavia_owned`` False means keepalived adds and removes it."""

    address: str
    prefixlen: int
    octavia_owned: bool | None = None

    @property
    def key(self) -> tuple[str, int]:
        """(compressed address, prefix length), as compared with the kernel's."""
        return (str(norm_ip(self.address)), self.prefixlen)

    @property
    def managed(self) -> bool:
        """Whether the agent adds this address itself."""
        return self.octavia_owned is not False


@dataclass(frozen=True)
class Route:
    """A route on the interface; ``table`` None is the main table."""

    dst: str
    gateway: str | None = None
    onlink: bool = False
    scope_link: bool = False
    prefsrc: str | None = None
    table: int | None = None

    @property
    def key(self) -> RouteKey:
        """(network, gateway, preferred source, table), normalised as the kernel reports them."""
        return (norm_net(self.dst), norm_ip(self.gateway), norm_ip(self.prefsrc), self.table or MAIN_TABLE)

    def to_json(self) -> dict[str, Any]:
        """The existing agent's route entry."""
        out: dict[str, Any] = {"dst": self.dst}
        if self.gateway is not None:
            out["gateway"] = self.gateway
        if self.onlink:
            out["flags"] = ["onlink"]
        if self.prefsrc is not None:
            out["prefsrc"] = self.prefsrc
        if self.scope_link:
            out["scope"] = "link"
        if self.table is not None:
            out["table"] = self.table
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route:
        """Read one route entry."""
        return cls(
            dst=str(data["dst"]),
            gateway=data.get("gateway"),
            onlink="onlink" in (data.get("flags") or []),
            scope_link=data.get("scope") == "link",
            prefsrc=data.get("prefsrc"),
            table=data.get("table"),
        )


@dataclass(frozen=True)
class Rule:
    """A source policy rule: traffic from ``src`` looks up ``table``."""

    src: str
    src_len: int
    table: int

    @property
    def key(self) -> RuleKey:
        """(table, compressed source, length)."""
        return (self.table, str(norm_ip(self.src)), self.src_len)


@dataclass(frozen=True)
class Interface:
    """One interface definition: the desired state of one NIC in the haproxy namespace."""

    name: str
    if_type: str
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    families: tuple[int, ...] = ()  # IP versions served: one masquerade rule set each
    is_sriov: bool = False
    mtu: int | None = None
    dhcp: bool = False
    ipv6auto: bool = False
    mac: str | None = field(default=None, compare=False)

    @property
    def dynamic(self) -> bool:
        """Whether some addresses come from DHCP or SLAAC (then unknown addresses are kept)."""
        return self.dhcp or self.ipv6auto

    def scripts(self) -> dict[str, list[dict[str, str]]]:
        """The existing agent's ``scripts`` entry: lvs-masquerade.sh per IP version."""
        suffix = " sriov" if self.is_sriov else ""
        return {
            action: [
                {"command": f"{MASQUERADE} {verb} ipv{family} {self.name}{suffix}"}
                for family in self.families
            ]
            for action, verb in (("up", "add"), ("down", "delete"))
        }

    def to_json(self) -> dict[str, Any]:
        """The file content, in the existing agent's format."""
        addresses: list[dict[str, Any]] = []
        if self.dynamic and self.if_type == BACKEND:
            addresses.append({"dhcp": self.dhcp, "ipv6auto": self.ipv6auto})
        else:
            addresses += [{"dhcp": True}] if self.dhcp else []
            addresses += [{"ipv6auto": True}] if self.ipv6auto else []
        for item in self.addresses:
            entry: dict[str, Any] = {"address": item.address, "prefixlen": item.prefixlen}
            if item.octavia_owned is not None:
                entry["octavia_owned"] = item.octavia_owned
            addresses.append(entry)
        out: dict[str, Any] = {
            "name": self.name,
            "if_type": self.if_type,
            "addresses": addresses,
            "routes": [route.to_json() for route in self.routes],
            "rules": [{"src": r.src, "src_len": r.src_len, "table": r.table} for r in self.rules],
            "scripts": self.scripts(),
            "is_sriov": self.is_sriov,
        }
        if self.mtu:
            out["mtu"] = self.mtu
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], mac: str | None = None) -> Interface:
        """Read a definition back (also one the existing agent wrote)."""
        addresses, dhcp, ipv6auto = [], False, False
        for entry in data.get("addresses") or []:
            dhcp = dhcp or bool(entry.get("dhcp"))
            ipv6auto = ipv6auto or bool(entry.get("ipv6auto"))
            if "address" in entry:
                addresses.append(
                    Address(str(entry["address"]), int(entry["prefixlen"]), entry.get("octavia_owned"))
                )
        families: list[int] = []
        for script in (data.get("scripts") or {}).get("up") or []:
            match = _SCRIPT.fullmatch(str(script.get("command", "")))
            if match and int(match.group(2)) not in families:
                families.append(int(match.group(2)))
        return cls(
            name=str(data["name"]),
            if_type=str(data.get("if_type", BACKEND)),
            addresses=tuple(addresses),
            routes=tuple(Route.from_json(r) for r in data.get("routes") or []),
            rules=tuple(
                Rule(str(r["src"]), int(r["src_len"]), int(r["table"])) for r in data.get("rules") or []
            ),
            families=tuple(families),
            is_sriov=bool(data.get("is_sriov", False)),
            mtu=data.get("mtu"),
            dhcp=dhcp,
            ipv6auto=ipv6auto,
            mac=mac,
        )


# -- reconciliation: pure differences between the kernel's state and a definition -------------------
def address_changes(
    iface: Interface, current: Iterable[tuple[str, int]]
) -> tuple[list[Address], list[tuple[str, int]]]:
    """(addresses to add, addresses to delete); IPv6 link-local ones are never deleted."""
    present = set(current)
    wanted = {a.key for a in iface.addresses}
    add: list[Address] = []
    for item in iface.addresses:
        if item.managed and item.key not in present and item.key not in {a.key for a in add}:
            add.append(item)
    delete: list[tuple[str, int]] = []
    if not iface.dynamic:
        delete = sorted(
            key for key in present if key not in wanted and not ipaddress.ip_address(key[0]).is_link_local
        )
    return add, delete


def route_changes(iface: Interface, current_static: Iterable[RouteKey]) -> tuple[list[Route], list[RouteKey]]:
    """(routes to add, static routes to delete); other protocols' routes are left alone."""
    present = set(current_static)
    wanted = {r.key for r in iface.routes}
    add, seen = [], set()
    for route in iface.routes:
        if route.key not in present and route.key not in seen:
            add.append(route)
            seen.add(route.key)
    delete = [] if iface.dynamic else sorted(k for k in present if k not in wanted)
    return add, delete


def rule_changes(iface: Interface, current: Iterable[RuleKey]) -> tuple[list[Rule], list[RuleKey]]:
    """(rules to add, rules to delete); only VIP interfaces own source rules."""
    if iface.if_type != VIP:
        return [], []
    present = set(current)
    wanted = {r.key for r in iface.rules}
    add = [r for r in iface.rules if r.key not in present]
    delete = [] if iface.dynamic else sorted(k for k in present if k not in wanted)
    return add, delete


# -- the store ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plugged:
    """One line of ``plugged_interfaces``: a NIC's MAC and its name in the haproxy namespace."""

    mac: str
    name: str


class InterfaceStore:
    """``<dir>/<name>.json`` definitions and ``<base>/plugged_interfaces``, written atomically."""

    def __init__(self, directory: Path, plugged_file: Path) -> None:
        self.directory = directory
        self.plugged_file = plugged_file

    def path(self, name: str) -> Path:
        """The definition file of one interface."""
        return self.directory / f"{name}.json"

    def plugged(self) -> list[Plugged]:
        """Every recorded (MAC, name) pair, in file order; malformed lines are skipped."""
        try:
            text = self.plugged_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        rows = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                rows.append(Plugged(parts[0].lower(), parts[1]))
        return rows

    def load(self, name: str, mac: str | None = None) -> Interface | None:
        """A stored definition, or None when absent; a corrupt file is an error."""
        try:
            data = json.loads(self.path(name).read_text(encoding="utf-8"))
            return Interface.from_json(data, mac)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("Corrupt interface file", f"{self.path(name)}: {exc}") from exc

    def save(self, iface: Interface, mac: str) -> None:
        """Write the definition, then record the MAC (a crash leaves the old or the new state)."""
        body = json.dumps(iface.to_json(), indent=2).encode() + b"\n"
        files.atomic_write(self.path(iface.name), body, files.PUBLIC)
        rows = [row for row in self.plugged() if row.mac != mac and row.name != iface.name]
        rows.append(Plugged(mac, iface.name))
        self._write_plugged(rows)

    def forget(self, name: str) -> None:
        """Drop a definition and its plugged line (a plug that was rolled back)."""
        self._write_plugged([row for row in self.plugged() if row.name != name])
        files.remove(self.path(name))

    def _write_plugged(self, rows: list[Plugged]) -> None:
        text = "".join(f"{row.mac} {row.name}\n" for row in rows)
        files.atomic_write(self.plugged_file, text.encode(), files.PUBLIC)

    def definitions(self) -> list[Interface]:
        """Every recorded interface that has a definition, with its MAC."""
        found = []
        for row in self.plugged():
            iface = self.load(row.name, row.mac)
            if iface is not None:
                found.append(iface)
        return found

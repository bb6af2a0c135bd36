"""nftables in the haproxy namespace: the VIP firewall (reference 7.8) and the masquerade rules (7.6).

Rule sets are rendered as text from pure data and loaded with ``nft -f`` inside the namespace.
Every file starts by creating and deleting its table, so one load replaces the table atomically.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amphora_agent.errors import CommandFailed
from amphora_agent.network.interfaces import Interface
from amphora_agent.network.plans import VIP_IFNAME, BadBody
from amphora_agent.system import files, proc

NFT = "nft"
PROTOCOLS = ("SCTP", "TCP", "UDP", "vrrp")
VIP_TABLE = "inet amphora_table"
_BASE_ACCEPTS = (
    "icmp type destination-unreachable accept",
    "icmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert, packet-too-big, "
    "destination-unreachable } accept",
    "udp sport 67 udp dport 68 accept",
    "udp sport 547 udp dport 546 accept",
)
_HOOK = "type filter hook input priority filter; policy drop;"


@dataclass(frozen=True)
class FirewallRule:
    """One allowed flow on the VIP: protocol, optional source CIDR, destination port."""

    protocol: str
    cidr: str | None
    port: int

    def render(self) -> str:
        """The nft statement for this rule."""
        prefix, version = "", 4
        if self.cidr is not None and self.cidr != "0.0.0.0/0":
            version = ipaddress.ip_network(self.cidr, strict=False).version
            prefix = f"{'ip' if version == 4 else 'ip6'} saddr {self.cidr} "
        if self.protocol == "vrrp":
            return prefix + ("ip protocol 112 accept" if version == 4 else "ip6 nexthdr 112 accept")
        return f"{prefix}{self.protocol.lower()} dport {self.port} accept"


def parse_rules(body: bytes) -> list[FirewallRule]:
    """The controller's rule list (an array of {protocol, cidr, port}); anything else is a 400."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested past the parser's limit
        raise BadBody("Invalid rules information") from exc
    if not isinstance(data, list):
        raise BadBody("Invalid rules information")
    return [_rule(item) for item in data]


def _rule(item: Any) -> FirewallRule:
    if not isinstance(item, dict) or set(item) != {"protocol", "cidr", "port"}:
        raise BadBody("Invalid rules information")
    protocol, cidr, port = item["protocol"], item["cidr"], item["port"]
    if protocol not in PROTOCOLS:
        raise BadBody("Invalid rules information")
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadBody("Invalid rules information")
    if cidr is not None:
        if not isinstance(cidr, str):
            raise BadBody("Invalid rules information")
        try:
            cidr = ipaddress.ip_network(cidr, strict=False).compressed
        except ValueError as exc:
            raise BadBody("Invalid rules information") from exc
    return FirewallRule(protocol, cidr, port)


def render_base() -> str:
    """The drop-all set an SR-IOV VIP starts with: loopback, ICMP errors, neighbour discovery and DHCP.

    Unlike the existing agent's base set, loopback stays open (as in the full set): haproxy's own
    local endpoints keep working before the controller's rules arrive.
    """
    body = "".join(f"    {line}\n" for line in ("iif lo accept", *_BASE_ACCEPTS))
    return (
        f"table {VIP_TABLE} {{}}\ndelete table {VIP_TABLE}\n"
        f"table {VIP_TABLE} {{\n  chain amphora_chain {{\n    {_HOOK}\n{body}  }}\n}}\n"
    )


def render_rules(rules: Iterable[FirewallRule], vip_ifname: str = VIP_IFNAME) -> str:
    """The full VIP firewall: established traffic, the base accepts, then one line per allowed flow.

    Traffic on other interfaces (member ports) is only accepted when established or untracked: member
    ports are ``notrack`` for TCP (the masquerade set), so haproxy's replies from members stay allowed.
    """
    main = [
        _HOOK,
        "ct state vmap { established : accept, related : accept, invalid : drop }",
        "iif lo accept",
        "ip saddr 127.0.0.0/8 drop",
        "ip6 saddr ::1 drop",
        *_BASE_ACCEPTS,
        f'iifname "{vip_ifname}" goto amphora_vip_chain',
        "ct state untracked accept",
    ]
    vip = [rule.render() for rule in rules]
    return (
        f"table {VIP_TABLE} {{}}\ndelete table {VIP_TABLE}\n"
        f"table {VIP_TABLE} {{\n  chain amphora_chain {{\n"
        + "".join(f"    {line}\n" for line in main)
        + "  }\n  chain amphora_vip_chain {\n"
        + "".join(f"    {line}\n" for line in vip)
        + "  }\n}\n"
    )


def render_masquerade(interfaces: Iterable[Interface]) -> str:
    """lvs-masquerade.sh as one file: UDP/SCTP masquerade out of each interface, TCP notrack unless SR-IOV."""
    out = []
    for family, table, prefix in ((4, "ip octavia-ipv4", "ip"), (6, "ip6 octavia-ipv6", "ip6")):
        served = [i for i in interfaces if family in i.families]
        masq = "".join(f'    oifname "{i.name}" meta l4proto udp masquerade\n' for i in served)
        sctp = "".join(f'    oifname "{i.name}" meta l4proto sctp masquerade\n' for i in served)
        tracked = [i for i in served if not i.is_sriov]
        pre = "".join(f'    iifname "{i.name}" meta l4proto tcp notrack\n' for i in tracked)
        post = "".join(f'    oifname "{i.name}" meta l4proto tcp notrack\n' for i in tracked)
        out.append(f"table {table} {{}}\ndelete table {table}\n")
        if not served:
            continue
        out.append(
            f"table {table} {{\n"
            f"  chain {prefix}-udp-masq {{\n    type nat hook postrouting priority 100;\n{masq}  }}\n"
            f"  chain {prefix}-sctp-masq {{\n    type nat hook postrouting priority 100;\n{sctp}  }}\n"
            f"  chain prerouting {{\n    type filter hook prerouting priority -300;\n{pre}  }}\n"
            f"  chain output {{\n    type filter hook output priority -300;\n{post}  }}\n"
            "}\n"
        )
    return "".join(out)


def load(path: Path, netns: str | None) -> str:
    """``nft -f <path>`` in the namespace; CommandFailed with nft's message (or exit status) on error.

    Without ``-o``: nftables 1.0.6's optimiser crashes (SIGSEGV) on some of these rule sets.
    """
    try:
        return proc.run([NFT, "-f", str(path)], netns=netns, timeout=30, failure="Cannot load nftables rules")
    except CommandFailed as exc:
        why = (exc.details or "").strip() or f"nft exited with status {exc.code}"
        raise CommandFailed(
            "Cannot load nftables rules", f"{path.name}: {why}", argv=exc.argv, code=exc.code
        ) from exc


def write_and_load(path: Path, text: str, netns: str | None) -> None:
    """Store a rule set (0600, atomically) and load it."""
    files.atomic_write(path, text.encode(), files.PRIVATE)
    load(path, netns)

"""Bring one link to its interface definition, using only the netlink primitives.

The plan (what to add, what to delete) comes from the pure diff functions of ``interfaces``; this
module only sequences the kernel calls: link up + MTU, addresses, IPv6 DAD, routes, then rules.
"""

from __future__ import annotations

from amphora_agent.network.interfaces import VIP, Interface, address_changes, route_changes, rule_changes
from amphora_agent.system.netlink import DAD_TIMEOUT, MAIN_TABLE, Netlink, write_sysctl


def prime(link: Netlink, iface: Interface, index: int) -> list[tuple[str, int]]:
    """Link up with its MTU and the missing addresses added (DAD starts); return stale addresses."""
    was_up = next((found.up for found in link.links() if found.index == index), False)
    link.set_up(index, iface.mtu, failure=f"Cannot set {iface.name} up")
    if iface.ipv6auto and not was_up:
        write_sysctl(f"net.ipv6.conf.{iface.name}.accept_ra", "2")
        write_sysctl(f"net.ipv6.conf.{iface.name}.autoconf", "1")
    add, delete = address_changes(iface, [(a.address, a.prefixlen) for a in link.addresses(index)])
    for item in add:
        failure = f"Cannot add {item.address}/{item.prefixlen} to {iface.name}"
        link.add_address(index, item.address, item.prefixlen, failure)
    return delete


def apply(link: Netlink, iface: Interface, index: int, dad_timeout: float = DAD_TIMEOUT) -> list[str]:
    """Bring a link to its definition: up + MTU, addresses, DAD, routes, rules; return the problems."""
    delete = prime(link, iface, index)
    problems = link.wait_dad(index, [a.key[0] for a in iface.addresses if a.managed], dad_timeout)
    for address, prefixlen in delete:
        link.del_address(index, address, prefixlen)
    problems += _routes(link, iface, index)
    if iface.if_type == VIP:
        problems += _rules(link, iface)
    return problems


def _routes(link: Netlink, iface: Interface, index: int) -> list[str]:
    problems = []
    add, delete = route_changes(iface, link.static_routes(index))
    for route in add:
        try:
            link.add_route(
                route.key[0],
                index,
                gateway=route.gateway,
                prefsrc=route.prefsrc,
                table=route.table or MAIN_TABLE,
                onlink=route.onlink,
                scope_link=route.scope_link,
            )
        except Exception as exc:  # a tenant's host route may be invalid: log it, keep going
            problems.append(f"route {route.to_json()}: {exc}")
    for key in delete:
        try:
            link.del_route(key, index)
        except Exception as exc:  # already gone
            problems.append(f"stale route {key[0]}: {exc}")
    return problems


def _rules(link: Netlink, iface: Interface) -> list[str]:
    problems = []
    add, delete = rule_changes(iface, link.source_rules())
    for rule in add:
        try:
            link.add_rule(rule.table, rule.src, rule.src_len)
        except Exception as exc:
            problems.append(f"rule from {rule.src}: {exc}")
    for key in delete:
        try:
            link.del_rule(key)
        except Exception as exc:
            problems.append(f"stale rule from {key[1]}: {exc}")
    return problems

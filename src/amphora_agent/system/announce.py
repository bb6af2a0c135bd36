"""Gratuitous ARP and unsolicited neighbour advertisements: tell the segment where addresses live.

``announce`` must be called from a thread that has joined the namespace holding the interface
(``netlink.run``): the sockets are opened in the caller's namespace. ``announce_in`` does that for
addresses of a namespace, finding the link that holds each. Failures are returned, never raised:
an announcement is an optimisation, the neighbours learn the address on their own later.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

from amphora_agent.system import netlink

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ALL_NODES = "ff02::1"
ND_NEIGHBOR_ADVERT = 136
NA_FLAGS = 0xA0000000  # router + override, as the existing agent sends them


def arp_frame(mac: str, address: str) -> bytes:
    """A broadcast ARP request whose sender and target IP are both ``address``."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = ipaddress.IPv4Address(address).packed
    header = BROADCAST + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + BROADCAST + ip
    return header + arp


def na_message(mac: str, address: str) -> bytes:
    """An ICMPv6 neighbour advertisement for ``address`` with its link-layer address option."""
    hw = bytes.fromhex(mac.replace(":", ""))
    target = ipaddress.IPv6Address(address).packed
    return struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAGS) + target + struct.pack("!BB", 2, 1) + hw


def announce(ifname: str, ifindex: int, mac: str, addresses: list[str]) -> list[str]:
    """Announce every address out of ``ifname`` (one packet socket for all IPv4 ones); return errors."""
    errors = []
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    if v4:
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:  # send-only: no receive hook
                for address in v4:
                    sock.sendto(arp_frame(mac, address), (ifname, ETH_P_ARP))
        except OSError as exc:
            errors.append(f"ARP on {ifname}: {exc}")
    for address in addresses:
        if address in v4:
            continue
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.bind((str(ipaddress.ip_address(address)), 0, 0, 0))
                sock.sendto(na_message(mac, address), (ALL_NODES, 0, 0, ifindex))
        except OSError as exc:
            errors.append(f"NA for {address} on {ifname}: {exc}")
    return errors


def announceable(addresses: Iterable[str]) -> list[str]:
    """The addresses worth announcing, compressed, each once: no loopback, unspecified or non-IP."""
    found: dict[str, None] = {}
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified):
            found.setdefault(address.compressed)
    return list(found)


def announce_in(namespace: str, addresses: Iterable[str]) -> list[str]:
    """Announce each address out of the link that holds it in ``namespace``; return the errors.

    An address no link holds is skipped, as the existing agent skips it.
    """
    wanted = announceable(addresses)
    if not wanted:
        return []

    def inside(link: netlink.Netlink) -> list[str]:
        links = {x.index: x for x in link.links()}
        held: dict[int, list[str]] = {}
        claimed: set[str] = set()
        for info in link.addresses():
            if info.address in wanted and info.address not in claimed and info.index in links:
                held.setdefault(info.index, []).append(info.address)
                claimed.add(info.address)
        errors = []
        for index, found in held.items():
            errors += announce(links[index].name, index, links[index].mac, found)
        return errors

    try:
        return netlink.run(namespace, inside)
    except Exception as exc:  # a missing namespace or a netlink error: nothing announced
        return [f"{', '.join(wanted)} in {namespace}: {exc}"]

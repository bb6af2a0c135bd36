"""pyroute2 adapter: the links, addresses, routes and rules of one namespace, as plain data.

Every call runs in a short-lived thread that has joined the namespace (``run``): a netlink socket
belongs to the namespace it was opened in, and pyroute2 opens one per thread. pyroute2 is imported
there, lazily, because it costs about 20 MiB and an agent without plugged interfaces never needs it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from amphora_agent.errors import CommandFailed
from amphora_agent.system import netns

LOG = logging.getLogger(__name__)
logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its DEBUG dumps every netlink message
T = TypeVar("T")
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RTPROT_KERNEL = 2
RTPROT_STATIC = 4
RTPROT_KEEPALIVED = 18
RTNH_F_ONLINK = 0x4
RT_SCOPE_LINK = 253
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
DAD_TIMEOUT = 30.0
MAIN_TABLE = 254
DAD_POLL = 0.05
EINVAL_RETRIES = 20


RouteKey = tuple[str, str | None, str | None, int]  # destination network, gateway, preferred source, table
RuleKey = tuple[int, str, int]  # table, source address, source prefix length


def norm_ip(text: str | None) -> str | None:
    """An address in compressed form (``None`` stays ``None``): how the kernel's answers are compared."""
    return None if text is None else ipaddress.ip_address(text).compressed


def family_of(text: str) -> int:
    """AF_INET or AF_INET6 for an address or a network."""
    return FAMILY[ipaddress.ip_network(text, strict=False).version]


@dataclass(frozen=True)
class Link:
    """One network interface of a namespace."""

    index: int
    name: str
    mac: str
    up: bool
    loopback: bool


@dataclass(frozen=True)
class AddressInfo:
    """One address on a link, with the kernel's flags."""

    index: int
    address: str
    prefixlen: int
    flags: int

    @property
    def tentative(self) -> bool:
        """Still in IPv6 duplicate address detection."""
        return bool(self.flags & IFA_F_TENTATIVE)


def run(namespace: str | None, func: Callable[[Netlink], T]) -> T:
    """Call ``func`` with a Netlink of ``namespace`` (None: the agent's own) in a fresh thread."""

    def body() -> T:
        from pyroute2 import IPRoute

        ipr = IPRoute()
        try:
            return func(Netlink(ipr, namespace))
        finally:
            ipr.close()

    if namespace:
        return netns.call_in(namespace, body)
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(body())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name="netlink", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def preload() -> None:
    """Import pyroute2 ahead of the first plug (about 0.3 s of CPU, once)."""
    import pyroute2  # noqa: F401


def write_sysctl(key: str, value: str) -> bool:
    """Set ``net.x.y`` in the calling thread's namespace; False when the knob does not exist here."""
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)
    except FileNotFoundError:
        return False
    return True


def _code(exc: Exception) -> int | None:
    return getattr(exc, "code", None)


def _call(
    call: Callable[..., Any],
    *args: Any,
    ignore: tuple[int, ...] = (),
    failure: str | None = None,
    **kwargs: Any,
) -> None:
    """One pyroute2 request; errno values in ``ignore`` are success, ``failure`` names a CommandFailed."""
    try:
        call(*args, **kwargs)
    except Exception as exc:
        if _code(exc) in ignore:
            return
        if failure is not None:
            raise CommandFailed(failure, str(exc)) from exc
        raise


class Netlink:
    """Typed calls on one pyroute2 socket; the namespace is the thread's (see ``run``)."""

    def __init__(self, ipr: Any, namespace: str | None) -> None:
        self.ipr = ipr
        self.namespace = namespace

    # -- reading ---------------------------------------------------------------------------------
    def links(self) -> list[Link]:
        """Every link of the namespace."""
        return [
            Link(
                index=msg["index"],
                name=str(msg.get_attr("IFLA_IFNAME")),
                mac=str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                up=bool(msg["flags"] & IFF_UP),
                loopback=bool(msg["flags"] & IFF_LOOPBACK),
            )
            for msg in self.ipr.get_links()
        ]

    def addresses(self, index: int | None = None) -> list[AddressInfo]:
        """Addresses of one link (or all), compressed, with their flags."""
        msgs = self.ipr.get_addr(index=index) if index is not None else self.ipr.get_addr()
        out = []
        for msg in msgs:
            address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if address is None:
                continue
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            out.append(AddressInfo(msg["index"], str(norm_ip(address)), msg["prefixlen"], flags))
        return out

    def default_route_links(self) -> set[int]:
        """Links that carry a default route of the main table."""
        found = set()
        for msg in self.ipr.route("dump"):
            if msg["dst_len"] == 0 and self._table(msg) == MAIN_TABLE and msg.get_attr("RTA_OIF"):
                found.add(msg.get_attr("RTA_OIF"))
        return found

    def interface_of(self, address: str) -> str | None:
        """The name of the link holding ``address`` (compared in compressed form)."""
        wanted = norm_ip(address)
        names = {link.index: link.name for link in self.links()}
        return next((names.get(a.index) for a in self.addresses() if a.address == wanted), None)

    @staticmethod
    def _table(msg: Any) -> int:
        return int(msg.get_attr("RTA_TABLE") or msg["table"])

    def static_routes(self, index: int) -> list[RouteKey]:
        """Routes the agent owns on a link (protocol static), as comparable keys."""
        keys = []
        for msg in self.ipr.route("dump"):
            if msg.get_attr("RTA_OIF") != index or msg["proto"] != RTPROT_STATIC:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
            net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False).compressed
            keys.append(
                (
                    net,
                    norm_ip(msg.get_attr("RTA_GATEWAY")),
                    norm_ip(msg.get_attr("RTA_PREFSRC")),
                    self._table(msg),
                )
            )
        return keys

    def source_rules(self) -> list[RuleKey]:
        """Source rules not made by the kernel or keepalived."""
        keys = []
        for msg in self.ipr.get_rules():
            src = msg.get_attr("FRA_SRC")
            if not src or msg.get_attr("FRA_PROTOCOL") in (RTPROT_KERNEL, RTPROT_KEEPALIVED):
                continue
            keys.append((int(msg.get_attr("FRA_TABLE") or msg["table"]), str(norm_ip(src)), msg["src_len"]))
        return keys

    # -- moving ----------------------------------------------------------------------------------
    def move(self, index: int, namespace_path: str, name: str) -> None:
        """Move a link into the namespace at ``namespace_path`` under a new name (one netlink request)."""
        fd = os.open(namespace_path, os.O_RDONLY)
        try:
            self.ipr.link("set", index=index, net_ns_fd=fd, ifname=name)
        finally:
            os.close(fd)

    def rename(self, index: int, name: str) -> None:
        """Give a link a new name (it has to be down for that)."""
        self.ipr.link("set", index=index, state="down")
        self.ipr.link("set", index=index, ifname=name)

    # -- changing --------------------------------------------------------------------------------
    def set_up(self, index: int, mtu: int | None, failure: str) -> None:
        """Bring a link up, with an MTU when given."""
        settings: dict[str, Any] = {"state": "up"}
        if mtu:
            settings["mtu"] = mtu
        _call(self.ipr.link, "set", index=index, failure=failure, **settings)

    def add_address(self, index: int, address: str, prefixlen: int, failure: str) -> None:
        """Add an address (present already: fine); IPv6 DAD starts."""
        _call(
            self.ipr.addr,
            "add",
            index=index,
            address=str(norm_ip(address)),
            prefixlen=prefixlen,
            family=family_of(address),
            ignore=(errno.EEXIST,),
            failure=failure,
        )

    def del_address(self, index: int, address: str, prefixlen: int) -> None:
        """Remove an address (gone already: fine)."""
        _call(
            self.ipr.addr,
            "del",
            index=index,
            address=address,
            prefixlen=prefixlen,
            family=family_of(address),
            ignore=(errno.EADDRNOTAVAIL,),
        )

    def add_route(
        self,
        dst: str,
        index: int,
        *,
        gateway: str | None = None,
        prefsrc: str | None = None,
        table: int = MAIN_TABLE,
        onlink: bool = False,
        scope_link: bool = False,
    ) -> None:
        """Add a static route (present already: fine); EINVAL while the link settles is retried."""
        args: dict[str, Any] = {
            "dst": dst,
            "oif": index,
            "proto": RTPROT_STATIC,
            "family": family_of(dst),
            "table": table,
        }
        if gateway:
            args["gateway"] = norm_ip(gateway)
        if onlink:
            args["flags"] = RTNH_F_ONLINK
        if scope_link and args["family"] == socket.AF_INET:
            args["scope"] = RT_SCOPE_LINK
        if prefsrc:
            args["prefsrc"] = norm_ip(prefsrc)
        for _ in range(EINVAL_RETRIES):
            try:
                _call(self.ipr.route, "add", ignore=(errno.EEXIST,), **args)
                return
            except Exception as exc:
                if _code(exc) != errno.EINVAL:
                    raise
                time.sleep(0.1)
        self.ipr.route("add", **args)

    def del_route(self, key: RouteKey, index: int) -> None:
        """Remove one route of a link."""
        dst, gateway, prefsrc, table = key
        self.ipr.route(
            "del", dst=dst, gateway=gateway, prefsrc=prefsrc, table=table, oif=index, family=family_of(dst)
        )

    def add_rule(self, table: int, src: str, src_len: int) -> None:
        """Add a source rule (present already: fine)."""
        _call(
            self.ipr.rule,
            "add",
            table=table,
            src=norm_ip(src),
            src_len=src_len,
            family=family_of(src),
            ignore=(errno.EEXIST,),
        )

    def del_rule(self, key: RuleKey) -> None:
        """Remove one source rule."""
        table, src, src_len = key
        self.ipr.rule("del", table=table, src=src, src_len=src_len, family=family_of(src))

    def wait_dad(self, index: int, addresses: Iterable[str], timeout: float) -> list[str]:
        """Wait until none of ``addresses`` is tentative (IPv6 DAD); report failed or slow ones."""
        watched = {a for a in addresses if ":" in a}
        deadline = time.monotonic() + timeout
        while watched:
            current = {a.address: a for a in self.addresses(index) if a.address in watched}
            failed = [a for a, info in current.items() if info.flags & IFA_F_DADFAILED]
            if failed:
                return [f"duplicate address detected for {', '.join(sorted(failed))}"]
            if not any(info.tentative for info in current.values()):
                return []
            if time.monotonic() > deadline:
                return [f"addresses still tentative after {timeout:g} s"]
            time.sleep(DAD_POLL)
        return []

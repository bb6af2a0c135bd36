"""Plug VIP, plug network, interface lookup, VIP firewall and reboot recovery: the API side.

NICs arrive (hot-plugged) in the agent's own namespace; a plug finds one by MAC, stores its
definition, moves it into the haproxy namespace under its stable name and applies the definition.
One lock serialises every network operation: the controller re-sends requests, and every plug is
safe to repeat. The interface that carries the agent's management address is never touched.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time

from amphora_agent.errors import AgentError, CommandFailed, Conflict, InvalidInput, NotFound
from amphora_agent.layout import Layout
from amphora_agent.network import nftables, plans
from amphora_agent.network.apply import Applier, protected
from amphora_agent.network.interfaces import Interface, InterfaceStore
from amphora_agent.settings import LiveSettings
from amphora_agent.system import netlink, netns

LOG = logging.getLogger(__name__)
NO_INTERFACE = "No suitable network interface found"
NOT_FOUND_FOR_IP = "Error interface not found for IP address"


class NoInterface(NotFound):
    """No NIC with the requested MAC is visible (yet): the controller retries on this exact text."""

    def __init__(self) -> None:
        super().__init__(NO_INTERFACE, NO_INTERFACE)


def management_addresses(*candidates: str | None) -> set[str]:
    """The specific addresses among ``candidates`` (request's local address, bind address), compressed."""
    found = set()
    for text in candidates:
        try:
            ip = ipaddress.ip_address((text or "").split("%")[0])
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_unspecified:
            found.add(ip.compressed)
    return found


class Networking:
    """The network side of the API; values in, data out."""

    def __init__(
        self, settings: LiveSettings, layout: Layout, dad_timeout: float = netlink.DAD_TIMEOUT
    ) -> None:
        current = settings.current
        self._settings = settings
        self.namespace = current.network_namespace
        self.store = InterfaceStore(layout.interfaces, layout.plugged_interfaces)
        self.applier = Applier(self.namespace, self.store, layout, dad_timeout)
        self.rules_file = self.applier.rules_file
        self.rescan_file = current.pci_rescan_file
        self.bind_host = current.bind_host
        self._lock = threading.Lock()

    # -- API ---------------------------------------------------------------------------------------
    def plug_vip(self, vip: str, body: bytes, reached_on: str | None = None) -> str:
        """``POST /1.0/plug/vip/<vip>``: the VIP NIC becomes ``eth1``; return the 202 details."""
        plug = plans.parse_plug_vip(vip, body)
        with self._lock:
            inside = self._links_inside()
            if any(link.mac == plug.mac for link in inside):
                raise Conflict("Interface already exists")
            holder = next((link for link in inside if link.name == plans.VIP_IFNAME), None)
            taken = f"{holder.name} already holds the NIC {holder.mac}" if holder else None
            iface = plans.vip_interface(plug, self._topology())
            self._plug_new(iface, plug.mac, reached_on, "Error plugging VIP", taken)
        return plans.plugged_details(plug)

    def plug_network(self, body: bytes, reached_on: str | None = None) -> str:
        """``POST /1.0/plug/network``: a member port as the lowest free ``ethN`` (N >= 2), or an update."""
        plug = plans.parse_plug_network(body)
        with self._lock:
            inside = self._links_inside()
            existing = next((link for link in inside if link.mac == plug.mac), None)
            name = existing.name if existing else plans.lowest_free_name({link.name for link in inside})
            if plug.vip is not None and existing is not None:  # the VRRP port: eth1 gains a member subnet
                iface = plans.vip_interface(plug.vip, self._topology(), plug.fixed_ips, name=name)
                failure = "Error plugging vip"
            else:
                iface = plans.member_interface(plug, name)
                failure = "Error plugging network"
            if existing is None:
                self._plug_new(iface, plug.mac, reached_on, failure)
                return f"Plugged on interface {name}"
            self.store.save(iface, plug.mac)
            self.applier.apply(iface, failure)
        return f"Updated existing interface {name}"

    def interface_of(self, ip: str, anywhere: bool = True) -> str:
        """``GET /1.0/interface/<ip>``: the haproxy namespace first, then (``anywhere``) the agent's own."""
        try:
            address = ipaddress.ip_address(ip).compressed
        except ValueError as exc:
            raise InvalidInput("Invalid IP address") from exc
        namespaces: list[str | None] = [self.namespace, None] if anywhere else [self.namespace]
        for namespace in namespaces:
            if namespace and not netns.exists(namespace):
                continue
            name = netlink.run(namespace, lambda link: link.interface_of(address))
            if name:
                return name
        raise NotFound(NOT_FOUND_FOR_IP)

    def set_rules(self, ip: str, body: bytes) -> None:
        """``PUT /1.0/interface/<ip>/rules``: the VIP firewall, loaded atomically with nft.

        An empty list keeps (reloads) the stored rules, or installs the drop-all base set when none
        are stored; a non-empty list is always applied (the existing agent ignores it the first time).
        """
        self.interface_of(ip, anywhere=False)
        rules = nftables.parse_rules(body)
        with self._lock:
            if rules:
                nftables.write_and_load(self.rules_file, nftables.render_rules(rules), self.namespace)
            elif self.rules_file.is_file():
                nftables.load(self.rules_file, self.namespace)
            else:
                nftables.write_and_load(self.rules_file, nftables.render_base(), self.namespace)

    def recover(self) -> list[str]:
        """Bring every stored interface back (after a reboot or a lost namespace); return their names.

        With nothing stored, the netlink library is loaded in the background instead: the VIP plug
        of a fresh amphora comes next.
        """
        definitions = self.store.definitions()
        if not definitions:
            threading.Thread(target=netlink.preload, name="netlink-preload", daemon=True).start()
            return []
        started = time.monotonic()
        with self._lock:
            netns.ensure(self.namespace)
            try:
                restored = self.applier.restore(definitions, management_addresses(self.bind_host))
            except Exception as exc:  # the agent must come up to be repaired by the controller
                LOG.error("interface recovery failed: %s", exc)
                return []
        LOG.info("interface recovery took %.0f ms", (time.monotonic() - started) * 1000)
        return restored

    # -- steps -------------------------------------------------------------------------------------
    def _topology(self) -> str:
        return self._settings.current.loadbalancer_topology

    def _links_inside(self) -> list[netlink.Link]:
        netns.ensure(self.namespace)
        return netlink.run(self.namespace, lambda link: link.links())

    def _plug_new(
        self, iface: Interface, mac: str, reached_on: str | None, failure: str, taken: str | None = None
    ) -> None:
        """Find the NIC in the agent's namespace, store its definition, move it in, apply it.

        ``taken`` says why the target name is not free; it is reported once the NIC is known to exist.
        """
        reached = management_addresses(reached_on, self.bind_host)
        target = netns.path(self.namespace)

        def move(link: netlink.Netlink) -> str:
            candidates = [x for x in link.links() if x.mac == mac]
            if not candidates:
                return ""
            guarded = protected(link, reached)
            for candidate in candidates:
                if candidate.index in guarded:
                    raise InvalidInput(
                        "Refusing to plug the management interface",
                        f"{candidate.name} ({mac}): {guarded[candidate.index]}",
                    )
            if taken:
                raise CommandFailed(failure, taken)
            self.store.save(iface, mac)
            try:
                link.move(candidates[0].index, target, iface.name)
            except Exception as exc:
                self.store.forget(iface.name)
                raise CommandFailed(failure, f"cannot move {candidates[0].name}: {exc}") from exc
            return candidates[0].name

        original = netlink.run(None, move)
        if not original:
            self._rescan()
            raise NoInterface()
        try:
            self.applier.apply(iface, failure)
        except AgentError:
            self._roll_back(iface, original)
            raise

    def _roll_back(self, iface: Interface, original: str) -> None:
        """A plug that failed half-way: the NIC goes back where it came from, so a retry starts afresh."""
        home = f"/proc/{os.getpid()}/ns/net"  # the main thread never leaves the agent's namespace

        def back(link: netlink.Netlink) -> None:
            found = next((x for x in link.links() if x.name == iface.name), None)
            if found is not None:
                link.move(found.index, home, original)

        try:
            netlink.run(self.namespace, back)
        except Exception as exc:  # best effort; the error that caused the roll-back is what matters
            LOG.error("cannot move %s back out of %s: %s", iface.name, self.namespace, exc)
        self.store.forget(iface.name)

    def _rescan(self) -> None:
        """Ask the kernel to look for hot-plugged PCI devices (where the host has a PCI bus)."""
        if self.rescan_file is None or not self.rescan_file.exists():
            return
        try:
            with open(self.rescan_file, "w", encoding="ascii") as handle:
                handle.write("1")
        except OSError as exc:
            LOG.warning("PCI rescan failed: %s", exc)

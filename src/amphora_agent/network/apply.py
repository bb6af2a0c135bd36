"""Interface definitions made real in the haproxy namespace: NICs found by MAC, applied, announced.

Used by the plugs (one interface at a time) and by reboot recovery (all stored interfaces at once,
with one netlink session per namespace and every NIC's duplicate address detection in parallel).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable

from amphora_agent.errors import AgentError, CommandFailed
from amphora_agent.layout import Layout
from amphora_agent.network import nftables, plans, reconcile
from amphora_agent.network.interfaces import Interface, InterfaceStore
from amphora_agent.system import announce, keepalived, netlink, netns, proc, sysctl_files

LOG = logging.getLogger(__name__)
NAMESPACE_SYSCTLS = (  # amphora-netns.service's settings (the IPVS ones exist only with IPVS)
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.vs.conntrack", "1"),
    ("net.ipv4.vs.expire_nodest_conn", "1"),
    ("net.ipv4.vs.expire_quiescent_template", "1"),
)


def load_ipvs() -> None:
    """Load ip_vs before the namespace settings, as amphora-netns.service does: ``net.ipv4.vs.*``
    exist only once it is loaded, and without ``vs.conntrack`` the masquerading of UDP and SCTP
    towards the members does not happen (members answer the client directly, and it drops that)."""
    keepalived.ipvs_unavailable()  # a no-op where the kernel has no IPVS


def namespace_settings() -> list[tuple[str, str]]:
    """What the haproxy namespace gets: the image's network settings (``net.*`` of the system's
    sysctl.d files, as ``sysctl --system`` in the namespace loads them for the existing agent:
    ``ip_nonlocal_bind`` lets a standby's haproxy bind the VIP it does not hold yet, the TCP tuning
    is per namespace), then amphora-netns.service's own. Only ``net.*``: other keys are the whole
    system's, and those the system already applied."""
    image = [(s.key, s.value) for s in sysctl_files.declared() if s.key.startswith("net.")]
    return image + list(NAMESPACE_SYSCTLS)


def protected(link: netlink.Netlink, reached: set[str]) -> dict[int, str]:
    """Links of the agent's namespace that must never move, with the reason."""
    guarded = {x.index: "it is the loopback interface" for x in link.links() if x.loopback}
    for address in link.addresses():
        if address.address in reached:
            guarded.setdefault(address.index, f"it carries the agent's management address {address.address}")
    for index in link.default_route_links():
        guarded.setdefault(index, "it carries the management namespace's default route")
    return guarded


def configure(
    link: netlink.Netlink, definitions: list[Interface], dad_timeout: float
) -> dict[str, list[str]]:
    """Inside the namespace: prime every link, then apply and announce each; problems per name.

    A definition whose link is missing or fails gets a single problem starting with ``failed:``.
    """
    for key, value in namespace_settings():
        try:
            netlink.write_sysctl(key, value)
        except OSError as exc:  # a value this kernel refuses: sysctl --system would go on too
            LOG.warning("cannot set %s = %s in the haproxy namespace: %s", key, value, exc)
    links = {x.name: x for x in link.links()}
    for iface in definitions:  # addresses first everywhere: DAD of all NICs runs at the same time
        if iface.name in links:
            try:
                reconcile.prime(link, iface, links[iface.name].index)
            except Exception as exc:  # reported by the full apply below
                LOG.debug("priming %s: %s", iface.name, exc)
    outcome: dict[str, list[str]] = {}
    for iface in definitions:
        found = links.get(iface.name)
        if found is None:
            outcome[iface.name] = [f"failed: {iface.name} is not in the namespace"]
            continue
        try:
            outcome[iface.name] = reconcile.apply(link, iface, found.index, dad_timeout)
        except Exception as exc:
            outcome[iface.name] = [f"failed: {getattr(exc, 'details', None) or exc}"]
            continue
        for error in announce.announce(iface.name, found.index, found.mac, plans.announced(iface)):
            LOG.info("announcement skipped: %s", error)
    return outcome


class Applier:
    """Moves NICs into the namespace and applies definitions there (the caller holds the lock)."""

    def __init__(
        self, namespace: str, store: InterfaceStore, layout: Layout, dad_timeout: float = netlink.DAD_TIMEOUT
    ) -> None:
        self.namespace = namespace
        self.store = store
        self.rules_file = layout.nftables_rules
        self.masquerade_file = layout.nftables_masquerade
        self.dad_timeout = dad_timeout

    def apply(self, iface: Interface, failure: str) -> None:
        """Apply one definition (its link is in the namespace), then the firewall; CommandFailed on error."""
        timeout = self.dad_timeout
        load_ipvs()
        try:
            outcome = netlink.run(self.namespace, lambda link: configure(link, [iface], timeout))
            self.firewall(sriov=iface.is_sriov)
        except AgentError as exc:
            raise CommandFailed(failure, exc.details or exc.message) from exc
        except Exception as exc:
            raise CommandFailed(failure, str(exc)) from exc
        problems = outcome.get(iface.name, [])
        if problems and problems[0].startswith("failed: "):
            raise CommandFailed(failure, problems[0].removeprefix("failed: "))
        self._finish(iface, problems)

    def restore(self, definitions: list[Interface], reached: set[str]) -> list[str]:
        """Every stored NIC back in the namespace under its name, applied; return the names restored."""
        present = self.gather(definitions, reached)
        timeout = self.dad_timeout
        load_ipvs()
        outcome = (
            netlink.run(self.namespace, lambda link: configure(link, present, timeout)) if present else {}
        )
        restored = []
        for iface in present:
            problems = outcome.get(iface.name, [])
            if problems and problems[0].startswith("failed: "):
                LOG.error("cannot restore %s (%s): %s", iface.name, iface.mac, problems[0])
                continue
            self._finish(iface, problems)
            restored.append(iface.name)
        try:
            self.firewall(sriov=any(i.is_sriov for i in present), restore=True)
        except AgentError as exc:
            LOG.error("cannot restore the namespace firewall: %s", exc.details or exc.message)
        return restored

    def gather(self, definitions: Iterable[Interface], reached: set[str]) -> list[Interface]:
        """Find each stored NIC by MAC (inside, or in the agent's namespace) and give it its name."""
        wanted = {iface.mac: iface for iface in definitions if iface.mac}

        def inside(link: netlink.Netlink) -> set[str]:
            found = set()
            for x in link.links():
                iface = wanted.get(x.mac)
                if iface is None:
                    continue
                try:
                    if x.name != iface.name:
                        link.rename(x.index, iface.name)
                    found.add(x.mac)
                except Exception as exc:  # e.g. the name is held by another NIC
                    LOG.error("cannot name %s (%s) %s: %s", x.name, x.mac, iface.name, exc)
            return found

        there = netlink.run(self.namespace, inside)
        missing = {mac: iface for mac, iface in wanted.items() if mac not in there}
        target = netns.path(self.namespace)

        def outside(link: netlink.Netlink) -> set[str]:
            moved: set[str] = set()
            guarded = protected(link, reached)
            for x in link.links():
                iface = missing.get(x.mac)
                if iface is None or x.mac in moved:
                    continue
                if x.index in guarded:
                    LOG.error("not moving %s (%s): %s", x.name, x.mac, guarded[x.index])
                    continue
                try:
                    link.move(x.index, target, iface.name)
                    moved.add(x.mac)
                except Exception as exc:
                    LOG.error("cannot move %s (%s) into %s: %s", x.name, x.mac, self.namespace, exc)
            return moved

        moved = netlink.run(None, outside) if missing else set()
        for mac, iface in missing.items():
            if mac not in moved:
                LOG.warning("interface %s (%s) is not attached any more", iface.name, mac)
        return [iface for iface in wanted.values() if iface.mac in there | moved]

    def firewall(self, sriov: bool, restore: bool = False) -> None:
        """The masquerade set of every stored interface; the VIP firewall for SR-IOV (or on restore)."""
        text = nftables.render_masquerade(self.store.definitions())
        nftables.write_and_load(self.masquerade_file, text, self.namespace)
        if self.rules_file.is_file() and (sriov or restore):
            nftables.load(self.rules_file, self.namespace)
        elif sriov:
            nftables.write_and_load(self.rules_file, nftables.render_base(), self.namespace)

    def _finish(self, iface: Interface, problems: list[str]) -> None:
        for problem in problems:
            LOG.warning("%s: %s", iface.name, problem)
        if iface.dhcp and shutil.which("dhclient"):
            try:
                proc.run(["dhclient", "-nw", iface.name], netns=self.namespace, failure="dhclient failed")
            except CommandFailed as exc:
                LOG.warning("%s: %s", iface.name, exc.details)
        LOG.info("interface %s (%s) is up in %s", iface.name, iface.mac, self.namespace)

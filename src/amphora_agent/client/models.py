"""What the client sends and returns: plain dataclasses and TypedDicts, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict


@dataclass(frozen=True)
class Reply:
    """The agent's success body ``{"message": "OK", "details": ...}`` with status and ETag."""

    status: int
    message: str
    details: str | None = None
    etag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The reply as JSON-ready data."""
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if self.etag is not None:
            body["etag"] = self.etag
        return body


@dataclass(frozen=True)
class Listener:
    """One row of ``GET /1.0/listeners``."""

    status: str
    uuid: str
    type: str


class Info(TypedDict, total=False):
    """``GET /1.0/info``."""

    hostname: str
    uuid: str | None
    haproxy_version: str
    api_version: str
    keepalived_version: str
    ipvsadm_version: str
    agent_version: str


class HostRoute(TypedDict):
    """A subnet host route."""

    destination: str
    nexthop: str


class AdditionalVip(TypedDict):
    """A second VIP of the load balancer (another subnet of the VIP network)."""

    ip_address: str
    subnet_cidr: str
    gateway: str | None
    host_routes: list[HostRoute]


class PlugVip(TypedDict):
    """The body of ``POST /1.0/plug/vip/<vip>`` (the controller sends every key)."""

    subnet_cidr: str
    gateway: str | None
    mac_address: str
    vrrp_ip: NotRequired[str | None]
    mtu: NotRequired[int | None]
    host_routes: NotRequired[list[HostRoute]]
    additional_vips: NotRequired[list[AdditionalVip]]
    is_sriov: NotRequired[bool]


class FixedIp(TypedDict):
    """One fixed IP of a plugged member port."""

    ip_address: str
    subnet_cidr: NotRequired[str]
    gateway: NotRequired[str | None]
    host_routes: NotRequired[list[HostRoute]]


class PlugNetwork(TypedDict):
    """The body of ``POST /1.0/plug/network``."""

    mac_address: str
    fixed_ips: NotRequired[list[FixedIp]]
    mtu: NotRequired[int | None]
    is_sriov: NotRequired[bool]
    vip_net_info: NotRequired[dict[str, Any]]


class Rule(TypedDict):
    """One nftables allow rule of ``PUT /1.0/interface/<ip>/rules``."""

    protocol: Literal["SCTP", "TCP", "UDP", "vrrp"]
    cidr: str | None
    port: int

"""A typed client for every route of the amphora agent API 1.0, on httpx, behaving like the controller.

``with AgentClient(Connection(url, amphora_id, ca, client_cert)) as api: api.info()``; the transport
(mutual TLS, retries, errors) is in ``amphora_agent.client.transport``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from amphora_agent.client.models import Info, Listener, PlugNetwork, PlugVip, Reply, Rule
from amphora_agent.client.transport import (
    AgentAPIError,
    AgentUnreachable,
    ClientError,
    Connection,
    RetryPolicy,
    Transport,
    as_bytes,
    seg,
)

API = "/1.0"
__all__ = ["AgentAPIError", "AgentClient", "AgentUnreachable", "ClientError", "Connection", "RetryPolicy"]


class AgentClient(Transport):
    """One method per route; use as a context manager (``with AgentClient(conn) as api``)."""

    # -- discovery ---------------------------------------------------------------------------
    def api_version(self) -> str:
        """``GET /``: the API version (404s are not retried, as in the controller)."""
        return str(self.json_of(self.checked("GET", "/", retry_404=False)).get("api_version"))

    def info(self) -> Info:
        """``GET /1.0/info``: host name, amphora id and versions."""
        return cast(Info, self.json_of(self.checked("GET", f"{API}/info")))

    def details(self) -> dict[str, Any]:
        """``GET /1.0/details``: host figures, versions and the listeners served."""
        return cast(dict[str, Any], self.json_of(self.checked("GET", f"{API}/details")))

    def openapi(self) -> str:
        """``GET /1.0/openapi.yaml``: the API document the agent serves."""
        return self.checked("GET", f"{API}/openapi.yaml").text

    # -- haproxy load balancers --------------------------------------------------------------
    def put_haproxy_config(self, lb_id: str, config: bytes | str, amphora_id: str | None = None) -> Reply:
        """Upload (check and store) a load balancer's haproxy.cfg; nothing is restarted."""
        amp = seg(self.amphora_id_or(amphora_id))
        path = f"{API}/loadbalancer/{amp}/{seg(lb_id)}/haproxy"
        return self.reply("PUT", path, content=as_bytes(config))

    def get_haproxy_config(self, lb_id: str) -> str:
        """The stored haproxy.cfg of ``lb_id``."""
        return self.checked("GET", f"{API}/loadbalancer/{seg(lb_id)}/haproxy").text

    def loadbalancer_action(self, object_id: str, action: str) -> Reply:
        """start, stop or reload a load balancer (or an LVS listener)."""
        return self.reply("PUT", f"{API}/loadbalancer/{seg(object_id)}/{seg(action)}")

    def start(self, object_id: str) -> Reply:
        """Start haproxy of ``object_id``."""
        return self.loadbalancer_action(object_id, "start")

    def stop(self, object_id: str) -> Reply:
        """Stop haproxy of ``object_id``."""
        return self.loadbalancer_action(object_id, "stop")

    def reload(self, object_id: str) -> Reply:
        """Reload (or start) haproxy of ``object_id``."""
        return self.loadbalancer_action(object_id, "reload")

    def listeners(self) -> list[Listener]:
        """Every listener with its status and type."""
        rows = self.json_of(self.checked("GET", f"{API}/listeners"))
        return [Listener(str(r["status"]), str(r["uuid"]), str(r["type"])) for r in rows]

    def delete_listener(self, object_id: str) -> Reply:
        """Delete a load balancer (or an LVS listener); a missing one is fine."""
        return self.reply("DELETE", f"{API}/listeners/{seg(object_id)}")

    # -- certificates ------------------------------------------------------------------------
    def _cert_path(self, lb_id: str, filename: str) -> str:
        return f"{API}/loadbalancer/{seg(lb_id)}/certificates/{seg(filename)}"

    def put_certificate(self, lb_id: str, filename: str, pem: bytes | str) -> Reply:
        """Upload a tenant PEM."""
        return self.reply("PUT", self._cert_path(lb_id, filename), content=as_bytes(pem))

    def certificate_md5(self, lb_id: str, filename: str) -> str:
        """The md5 of a stored tenant PEM."""
        return str(self.json_of(self.checked("GET", self._cert_path(lb_id, filename)))["md5sum"])

    def delete_certificate(self, lb_id: str, filename: str) -> Reply:
        """Delete a tenant PEM; a missing one is fine."""
        return self.reply("DELETE", self._cert_path(lb_id, filename))

    def rotate_server_certificate(self, pem: bytes | str) -> Reply:
        """Replace the agent's own server certificate (certificate + key); no restart."""
        return self.reply("PUT", f"{API}/certificate", content=as_bytes(pem))

    # -- LVS (UDP/SCTP) listeners ------------------------------------------------------------
    def put_udp_listener(self, listener_id: str, config: bytes | str, amphora_id: str | None = None) -> Reply:
        """Upload the keepalived LVS config of a UDP or SCTP listener."""
        amp = seg(self.amphora_id_or(amphora_id))
        path = f"{API}/listeners/{amp}/{seg(listener_id)}/udp_listener"
        return self.reply("PUT", path, content=as_bytes(config))

    def get_udp_listener(self, listener_id: str) -> str:
        """The stored LVS config of ``listener_id``."""
        return self.checked("GET", f"{API}/listeners/{seg(listener_id)}/udp_listener").text

    # -- VRRP --------------------------------------------------------------------------------
    def put_vrrp_config(self, config: bytes | str) -> Reply:
        """Upload the keepalived VRRP config."""
        return self.reply("PUT", f"{API}/vrrp/upload", content=as_bytes(config))

    def vrrp_action(self, action: str) -> Reply:
        """start, stop or reload keepalived."""
        return self.reply("PUT", f"{API}/vrrp/{seg(action)}")

    # -- network -----------------------------------------------------------------------------
    def plug_vip(self, vip: str, body: PlugVip | Mapping[str, Any]) -> Reply:
        """Plug the VIP port (hot-plug lag answers are retried)."""
        return self.reply("POST", f"{API}/plug/vip/{seg(vip)}", json=dict(body))

    def plug_network(self, body: PlugNetwork | Mapping[str, Any]) -> Reply:
        """Plug a member network port (hot-plug lag answers are retried)."""
        return self.reply("POST", f"{API}/plug/network", json=dict(body))

    def interface(self, ip_addr: str) -> str:
        """The name of the namespace interface holding ``ip_addr``."""
        body = self.json_of(self.checked("GET", f"{API}/interface/{seg(ip_addr)}"))
        return str(body["interface"])

    def put_interface_rules(self, ip_addr: str, rules: Sequence[Rule | Mapping[str, Any]]) -> Reply:
        """Replace the nftables allow-list of the interface holding ``ip_addr`` (SR-IOV VIPs)."""
        payload = [dict(rule) for rule in rules]
        return self.reply("PUT", f"{API}/interface/{seg(ip_addr)}/rules", json=payload)

    # -- agent -------------------------------------------------------------------------------
    def put_agent_config(self, config: bytes | str) -> Reply:
        """Replace the agent's INI file; the mutable options apply at once."""
        return self.reply("PUT", f"{API}/config", content=as_bytes(config))

"""Every on-disk path the agent uses, in one place (the controller renders several of them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amphora_agent.settings import Settings
from amphora_agent.system.files import is_real_dir, is_real_file

DEFAULT_INTERFACES_DIR = Path("/etc/octavia/interfaces")  # the existing agent's, kept for upgrades
LVS_PREFIX = "octavia-keepalivedlvs-"


@dataclass(frozen=True)
class Layout:
    """Paths under ``base_path`` and ``base_cert_dir``, as the existing agent lays them out."""

    base: Path
    certs: Path
    interfaces: Path = DEFAULT_INTERFACES_DIR

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        """The layout for the configured directories."""
        interfaces = settings.agent_server_network_dir or DEFAULT_INTERFACES_DIR
        return cls(settings.base_path, settings.base_cert_dir, interfaces)

    def lb_dir(self, lb_id: str) -> Path:
        """A load balancer's folder; its haproxy.cfg defines that the load balancer exists."""
        return self.base / lb_id

    def haproxy_cfg(self, lb_id: str) -> Path:
        """The stored, checked config."""
        return self.lb_dir(lb_id) / "haproxy.cfg"

    def haproxy_cfg_new(self, lb_id: str) -> Path:
        """Where an upload is checked before it replaces the stored config."""
        return self.lb_dir(lb_id) / "haproxy.cfg.new"

    def haproxy_cfg_failed(self, lb_id: str) -> Path:
        """The last rejected upload, kept for debugging."""
        return self.lb_dir(lb_id) / "haproxy.cfg.new-failed"

    def pid_file(self, lb_id: str) -> Path:
        """The haproxy master's pid."""
        return self.lb_dir(lb_id) / f"{lb_id}.pid"

    def master_socket(self, lb_id: str) -> Path:
        """The haproxy master CLI, used to confirm starts and reloads."""
        return self.lb_dir(lb_id) / "master.sock"

    def stats_socket(self, lb_id: str) -> Path:
        """The stats socket the controller's config names."""
        return self.base / f"{lb_id}.sock"

    def servers_state(self, lb_id: str) -> Path:
        """The server-state file the controller's config names."""
        return self.lb_dir(lb_id) / "servers-state"

    def desired_running(self, lb_id: str) -> Path:
        """Present while the load balancer should run: the supervisor restarts it, also after a reboot."""
        return self.lb_dir(lb_id) / "running"

    def cert_dir(self, lb_id: str) -> Path:
        """Tenant TLS material of one load balancer."""
        return self.certs / lb_id

    @property
    def user_group(self) -> Path:
        """The image's ``global`` + ``group`` file, passed as a second ``-f`` to haproxy."""
        return self.base / "haproxy-default-user-group.conf"

    @property
    def check_tuning(self) -> Path:
        """A last ``-f`` for ``haproxy -c`` only: no SSL session cache is allocated to check a config."""
        return self.base / "haproxy-check-tuning.conf"

    @property
    def plugged_interfaces(self) -> Path:
        """Each plugged NIC's MAC and its name in the haproxy namespace."""
        return self.base / "plugged_interfaces"

    @property
    def nftables_rules(self) -> Path:
        """The VIP firewall the controller's rules render into."""
        return self.base / "nftables-vip.rules"

    @property
    def nftables_masquerade(self) -> Path:
        """The member-network masquerade rules."""
        return self.base / "nftables-masquerade.rules"

    # -- keepalived (VRRP and LVS listeners), as the existing agent lays them out (reference 5.1) --

    @property
    def vrrp_dir(self) -> Path:
        """VRRP config, pid files, log and the check-script chain."""
        return self.base / "vrrp"

    @property
    def check_scripts_dir(self) -> Path:
        """Every file in here is run by ``check_script.sh``."""
        return self.vrrp_dir / "check_scripts"

    @property
    def check_script(self) -> Path:
        """The script the controller's VRRP config tracks."""
        return self.vrrp_dir / "check_script.sh"

    def vrrp(self, name: str = "octavia-keepalived.conf") -> Path:
        """A file of the VRRP unit (``octavia-keepalived.<suffix>``)."""
        return self.vrrp_dir / name

    @property
    def bin_dir(self) -> Path:
        """Image executables the controller's configs name, where the host lacks them (searched first)."""
        return self.base / "bin"

    @property
    def lvs_dir(self) -> Path:
        """LVS listener configs, pid files and logs."""
        return self.base / "lvs"

    @property
    def udp_check(self) -> Path:
        """The UDP-CONNECT check the controller's LVS configs call."""
        return self.lvs_dir / "check" / "udp_check.sh"

    def lvs(self, listener_id: str, suffix: str = "conf") -> Path:
        """A file of one LVS listener: ``octavia-keepalivedlvs-<id>.<suffix>``."""
        return self.lvs_dir / f"{LVS_PREFIX}{listener_id}.{suffix}"

    def lvs_run(self, listener_id: str) -> Path:
        """The copy keepalived runs when the stored config names another namespace than the agent's."""
        return self.lvs(listener_id, "run.conf")

    def lvs_ids(self) -> list[str]:
        """LVS listeners with a stored config (reference 5.2), sorted; nothing behind a link."""
        if not is_real_dir(self.lvs_dir):
            return []
        try:
            names = sorted(p.name for p in self.lvs_dir.iterdir())
        except OSError:
            return []
        ids = []
        for name in names:
            stem, _, rest = name.partition(".")
            if rest == "conf" and stem.startswith(LVS_PREFIX):
                ids.append(stem[len(LVS_PREFIX) :])
        return ids

    def lb_ids(self) -> list[str]:
        """Load balancers with a stored config, sorted; a linked folder or config is none of ours."""
        try:
            entries = sorted(p.name for p in self.base.iterdir())
        except OSError:
            return []
        return [name for name in entries if self.has_config(name)]

    def has_config(self, lb_id: str) -> bool:
        """Whether ``lb_id`` has a stored config in a real folder (no link followed)."""
        return is_real_dir(self.lb_dir(lb_id)) and is_real_file(self.haproxy_cfg(lb_id))

"""Every on-disk path the agent uses, in one place (the controller renders several of them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amphora_agent.settings import Settings


@dataclass(frozen=True)
class Layout:
    """Paths under ``base_path`` and ``base_cert_dir``, as the existing agent lays them out."""

    base: Path
    certs: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        """The layout for the configured directories."""
        return cls(settings.base_path, settings.base_cert_dir)

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

    def lb_ids(self) -> list[str]:
        """Load balancers with a stored config, sorted."""
        try:
            entries = sorted(p.name for p in self.base.iterdir())
        except OSError:
            return []
        return [name for name in entries if (self.base / name / "haproxy.cfg").is_file()]

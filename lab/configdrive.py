"""Nova config drives as the controller has Nova build them for an amphora.

The controller (``ComputeCreate``) sends four files: the server certificate, the client CA, the
agent's config and the log offloading rules, either as Nova's injected ``files`` or, with
``user_data_config_drive = True``, inside a ``#cloud-config`` ``write_files`` user_data. The two
renderers below reproduce Octavia's Jinja templates (``10-rsyslog.conf.template`` and
``user_data_config_drive.template``, autoescape on) byte for byte, checked against Octavia's own
unit-test expectations in ``tests/unit/test_configdrive.py``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVER_PEM = "/etc/octavia/certs/server.pem"
CLIENT_CA = "/etc/octavia/certs/client_ca.pem"
AGENT_CONF = "/etc/octavia/amphora-agent.conf"
RSYSLOG_CONF = "/etc/rsyslog.d/10-rsyslog.conf"

USER_DATA_HEADER = (
    "#cloud-config\n"
    "# vim: syntax=yaml\n"
    "#\n"
    "# This configuration with take user-data dict and build a cloud-init\n"
    "# script utilizing the write_files module. The user-data dict should be a\n"
    "# Key Value pair where the Key is the path to store the file and the Value\n"
    "# is the data to store at that location\n"
    "#\n"
    "# Example:\n"
    "#     {'/root/path/to/file.cfg': 'I'm a file, write things in me'}\n"
)


@dataclass(frozen=True)
class LogTarget:
    """One ``host:port`` of ``[amphora_agent] admin_log_targets`` / ``tenant_log_targets``."""

    host: str
    port: int


@dataclass(frozen=True)
class LogOptions:
    """The controller's ``[amphora_agent]`` logging options, with Octavia's defaults."""

    protocol: str = "UDP"
    retry_count: int = 5
    retry_interval: int = 2
    queue_size: int = 10000
    forward_all_logs: bool = False
    disable_local_log_storage: bool = False
    admin_log_facility: int = 1
    user_log_facility: int = 0


def _ruleset(name: str, hosts: Sequence[LogTarget], opts: LogOptions) -> str:
    """One forwarding ruleset: the first target, then failover targets."""
    text = f'ruleset(name="{name}" queue.type="linkedList" queue.size="{opts.queue_size}") {{'
    for n, host in enumerate(hosts):
        text += (
            f'\n  action(type="omfwd"\n'
            f'         target="{host.host}"\n'
            f'         port="{host.port}"\n'
            f'         protocol="{opts.protocol}"\n'
            f'         action.resumeRetryCount="{opts.retry_count}"\n'
            f'         action.resumeInterval="{opts.retry_interval}"\n'
            "         "
        )
        text += ")" if n == 0 else 'action.execOnlyWhenPreviousIsSuspended="on")'
    return text + "\n}"


def render_rsyslog(
    admin: Sequence[LogTarget], tenant: Sequence[LogTarget], opts: LogOptions | None = None
) -> str:
    """``/etc/rsyslog.d/10-rsyslog.conf`` as ``LoggingJinjaTemplater.build_logging_config`` renders it."""
    opts = opts or LogOptions()
    text = ""
    if tenant:
        text += _ruleset("tenant_forwarding", tenant, opts)
        text += f"\nlocal{opts.user_log_facility}.=info call tenant_forwarding\n"
    if admin:
        text += "\n" + _ruleset("admin_forwarding", admin, opts)
        if opts.forward_all_logs:
            text += f"\n*.*;local{opts.user_log_facility}.none call admin_forwarding\n"
        else:
            text += f"\nlocal{opts.admin_log_facility}.* call admin_forwarding"
    if opts.disable_local_log_storage:
        text += "*.* stop"
    return text


def markup_escape(text: str) -> str:
    """markupsafe's escape, which the controller's autoescaping template applies to each file."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&#39;"), ('"', "&#34;")):
        text = text.replace(char, entity)
    return text


def _indent(text: str, width: int) -> str:
    """Jinja's ``indent`` filter (first line and blank lines left alone)."""
    lines = (text + "\n").splitlines()
    out = lines.pop(0)
    if lines:
        out += "\n" + "\n".join(" " * width + line if line else line for line in lines)
    return out


def render_user_data(files: Mapping[str, str], timezone: str = "UTC") -> str:
    """The user_data of ``UserDataJinjaCfg.build_user_data_config`` (``user_data_config_drive``)."""
    text = USER_DATA_HEADER
    if files:
        text += "write_files:"
        for path, content in files.items():
            text += f"\n-   path: {path}\n    content: |\n        {_indent(markup_escape(content), 8)}"
    text += "\nruncmd:\n-   systemctl restart rsyslog\n"
    if files:
        text += "-   service amphora-agent restart"
    return text + f"\n\ntimezone: {timezone}"


def agent_config(fixture: str, heartbeat_targets: Sequence[str]) -> str:
    """The controller's rendered agent config with the health managers moved to ``heartbeat_targets``."""
    lines = []
    for line in fixture.splitlines(keepends=True):
        if line.startswith("controller_ip_port_list = "):
            line = f"controller_ip_port_list = {', '.join(heartbeat_targets)}\n"
        lines.append(line)
    return "".join(lines)


def write_tree(
    folder: Path, files: Mapping[str, str], amphora_id: str, *, user_data_form: bool = False
) -> Path:
    """The drive's folder tree: ``openstack/latest/meta_data.json`` with ``files`` (or user_data)."""
    latest = folder / "openstack" / "latest"
    content = folder / "openstack" / "content"
    latest.mkdir(parents=True)
    content.mkdir()
    entries = []
    if not user_data_form:
        for n, (path, text) in enumerate(files.items()):
            name = f"{n:04d}"
            (content / name).write_text(text)
            entries.append({"path": path, "content_path": f"/content/{name}"})
    meta = {
        "uuid": amphora_id,
        "name": f"amphora-{amphora_id}",
        "hostname": f"amphora-{amphora_id}",
        "launch_index": 0,
        "availability_zone": "nova",
        "meta": {},
        "files": entries,
    }
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "user_data").write_text(render_user_data(files if user_data_form else {}))
    return folder


def make_iso(tree: Path, iso: Path) -> Path:
    """The ISO 9660 ``config-2`` volume, made with the options Nova's configdrive module uses."""
    argv = ["genisoimage", "-o", str(iso), "-ldots", "-allow-lowercase", "-allow-multidot", "-l"]
    argv += ["-publisher", "amphora-agent lab", "-quiet", "-J", "-r", "-V", "config-2", str(tree)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return iso

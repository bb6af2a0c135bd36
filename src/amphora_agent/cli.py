"""Composition root: Settings -> adapters -> services -> app; then serve, supervise, stop on a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import logging.handlers
import resource
import socket
import sys
from functools import partial
from pathlib import Path

from amphora_agent import __version__, tls
from amphora_agent import settings as cfg
from amphora_agent.agentconfig import AgentConfig
from amphora_agent.api import Services, create_app
from amphora_agent.certificates import ServerCertificate, TenantCertificates
from amphora_agent.dispatch import build as build_keepalived
from amphora_agent.errors import AgentError
from amphora_agent.heartbeat import HeartbeatSender
from amphora_agent.info import HostInfo
from amphora_agent.interfaces import DEFAULT_DIR as DEFAULT_INTERFACES_DIR
from amphora_agent.keepalived_supervisor import KeepalivedUnits
from amphora_agent.layout import Layout
from amphora_agent.loadbalancers import LoadBalancers, LockTable
from amphora_agent.lvs_stats import LvsStats
from amphora_agent.plugging import Networking
from amphora_agent.settings import LiveSettings, Settings
from amphora_agent.supervisor import OrphanReport, Supervisor, UnitSource, haproxy_units
from amphora_agent.system import files, netns
from amphora_agent.system import keepalived as ka

LOG = logging.getLogger("amphora_agent")


def configure_logging(settings: Settings) -> None:
    """stderr logging at INFO (DEBUG with ``debug``), syslog or a logging file when configured."""
    if settings.log_config_append and settings.log_config_append.is_file():
        logging.config.fileConfig(settings.log_config_append, disable_existing_loggers=False)
        return
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    if settings.use_syslog and Path("/dev/log").exists():
        facility = settings.syslog_log_facility.lower().removeprefix("log_")
        code = logging.handlers.SysLogHandler.facility_names.get(facility, 1 << 3)
        root.addHandler(logging.handlers.SysLogHandler("/dev/log", code))


def raise_fd_limit() -> None:
    """Children (haproxy) inherit the soft open-file limit: raise it to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen_socket(host: str, port: int) -> socket.socket:
    """The API socket; ``::`` also accepts IPv4 (v6only off), as the existing agent's bind does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then; without it
    # a response written in two parts waits for the client's delayed ACK (40 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(False)
    return sock


def drop_crash_leftovers(settings: Settings) -> None:
    """Remove the temp files an agent killed mid-write left (the files they were for are intact)."""
    removed = files.clean_stale_temps(settings.base_path, recursive=True)
    removed += files.clean_stale_temps(settings.base_cert_dir, recursive=True)
    for path in (settings.config_file, settings.agent_server_cert):
        if path is not None:  # folders shared with others: only the temps of the agent's own file
            removed += files.clean_stale_temps(path.parent, name=path.name)
    network_dir = settings.agent_server_network_dir or DEFAULT_INTERFACES_DIR
    removed += files.clean_stale_temps(network_dir, name="*.json")
    if removed:
        LOG.warning("removed %d temp file(s) left by an interrupted write: %s", len(removed), removed[:5])


async def serve(settings: Settings) -> None:
    """Run the agent until SIGTERM or SIGINT."""
    import uvicorn

    live = LiveSettings(settings)
    live.subscribe(lambda new: logging.getLogger().setLevel(logging.DEBUG if new.debug else logging.INFO))
    layout = Layout.from_settings(settings)
    raise_fd_limit()
    netns.ensure(settings.network_namespace)
    locks = LockTable()
    lbs = LoadBalancers(live, layout, locks)
    drop_crash_leftovers(settings)
    lbs.prepare()
    keepalived = build_keepalived(live, lbs, locks)
    context = tls.server_context(
        settings.agent_server_cert, settings.agent_server_ca, settings.agent_tls_protocol
    )
    services = Services(
        lbs=lbs,
        certs=TenantCertificates(layout, locks),
        server_cert=ServerCertificate(settings.agent_server_cert, context),
        agent_config=AgentConfig(live),
        info=HostInfo(live, lbs, keepalived.details),
        network=Networking(live, layout),
        keepalived=keepalived,
    )
    restored = services.network.recover() if services.network else []  # NICs before any haproxy
    if restored:
        LOG.info("restored interface(s) %s in %s", ", ".join(restored), settings.network_namespace)
    keepalived.scripts.refresh()  # the check chain names this agent's checker: keep it current
    # haproxy first, then VRRP and LVS, so keepalived's check chain passes at once
    units: list[UnitSource] = [
        partial(haproxy_units, lbs),
        KeepalivedUnits(keepalived.vrrp, keepalived.lvs),
        OrphanReport(lbs),
    ]
    supervisor = Supervisor(units)
    restarted = supervisor.check_once()  # reboot recovery before the first request
    if restarted:
        LOG.info("started %s", ", ".join(restarted))
    sock = listen_socket(settings.bind_host, settings.bind_port)
    config = uvicorn.Config(
        create_app(services),
        log_config=None,
        access_log=False,
        timeout_keep_alive=30,
        server_header=False,
        lifespan="off",
    )
    config.load()
    config.ssl = context
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    lvs = keepalived.lvs
    lvs_stats = LvsStats(lvs.paths, lvs.is_running, lambda: lvs.netns, ka.ipvs_unavailable)
    heartbeat = asyncio.create_task(HeartbeatSender(live, layout, lbs.is_running, lvs_stats).run(stop))
    LOG.info("amphora-agent %s listening on [%s]:%d", __version__, settings.bind_host, settings.bind_port)
    try:
        await server.serve(sockets=[sock])
    finally:
        stop.set()
        await task
        await heartbeat
        LOG.info("amphora-agent stopped; load balancers keep running")


def dev_certs(folder: Path, amphora_id: str | None) -> int:
    """``amphora-agent dev-certs FOLDER``: a CA, a server and a client certificate for local use."""
    import uuid

    from amphora_agent.devcerts import write_dev_certs

    amphora_id = amphora_id or str(uuid.uuid4())
    try:
        paths = write_dev_certs(folder, amphora_id)
    except OSError as exc:
        print(f"amphora-agent: cannot write certificates into {folder}: {exc}", file=sys.stderr)
        return 1
    print(f"# development certificates for amphora {amphora_id} (not for production)")
    print(f"# agent config: [amphora_agent] agent_server_cert = {paths.server}")
    print(f"#               [amphora_agent] agent_server_ca = {paths.ca}")
    print(f"#               [amphora_agent] amphora_id = {amphora_id}")
    print(f"AMPHORA_ID={amphora_id}")
    print(f"AMPHORA_CA={paths.ca}")
    print(f"AMPHORA_CLIENT_CERT={paths.client}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``amphora-agent --config-file FILE``."""
    parser = argparse.ArgumentParser(prog="amphora-agent", description=__doc__)
    parser.add_argument(
        "--config-file",
        type=Path,
        default=cfg.DEFAULT_CONFIG_FILE,
        help="the agent's INI file (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"amphora-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    dev = commands.add_parser(
        "dev-certs",
        help="write throwaway certificates for a first run (never for production)",
        description="Write ca.pem, server.pem (CN/SAN = the amphora id) and client.pem into FOLDER.",
    )
    dev.add_argument("folder", type=Path, metavar="FOLDER")
    dev.add_argument("--amphora-id", help="the server certificate's name (default: a new UUID)")
    args = parser.parse_args(argv)
    if args.command == "dev-certs":
        return dev_certs(args.folder, args.amphora_id)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = cfg.load(args.config_file)
    except AgentError as exc:
        print(f"amphora-agent: {exc.message}: {exc.details}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except (AgentError, OSError) as exc:
        LOG.error("cannot start: %s", exc)
        return 1
    return 0

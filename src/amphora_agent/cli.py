"""``amphora-agent``: read the settings, wire the agent (``wiring``), serve until a signal; ``dev-certs``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from amphora_agent import __version__, settings
from amphora_agent.api import create_app
from amphora_agent.errors import AgentError
from amphora_agent.logs import LogSetup
from amphora_agent.wiring import Agent, wire

LOG = logging.getLogger("amphora_agent")


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


async def serve(agent: Agent) -> None:
    """Start up, answer the API until SIGTERM or SIGINT, then stop the loops (load balancers keep running)."""
    from amphora_agent import server
    from amphora_agent.api import error_json

    settings = agent.live.current
    agent.start_up()
    sock = listen_socket(settings.bind_host, settings.bind_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loops = [asyncio.create_task(agent.supervisor.run(stop)), asyncio.create_task(agent.heartbeat.run(stop))]
    loops.append(asyncio.create_task(agent.metrics.run(stop)))  # 127.0.0.1:9102 in the haproxy namespace
    LOG.info("amphora-agent %s listening on [%s]:%d", __version__, settings.bind_host, settings.bind_port)
    try:
        app = create_app(agent.services)
        limits = server.Limits.from_settings(settings)
        await server.serve(app, sock, agent.services.tls_context, limits, error_json, stop)
    finally:
        stop.set()
        sock.close()
        await asyncio.gather(*loops)
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
        default=settings.DEFAULT_CONFIG_FILE,
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
        loaded = settings.load(args.config_file)
    except AgentError as exc:
        print(f"amphora-agent: {exc.message}: {exc.details}", file=sys.stderr)
        return 2
    logs = LogSetup(loaded)
    try:
        agent = wire(loaded)
        agent.live.subscribe(logs.follow)  # debug and log_config_append are live
        asyncio.run(serve(agent))
    except (AgentError, OSError) as exc:
        LOG.error("cannot start: %s", exc)
        return 1
    return 0

"""The API socket: responses are not held back by Nagle's algorithm (40 ms per kept-alive request)."""

from __future__ import annotations

import asyncio
import socket

from amphora_agent.cli import listen_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY on every connection accepted from the agent's listening socket."""

    async def scenario() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listen_socket("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(accepted, 5)
            finally:
                writer.close()

    assert asyncio.run(scenario()) != 0

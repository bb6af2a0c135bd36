"""Hostile clients for the ``hostile`` benchmark: connection holders (in a process of their own) and
single connections that dawdle.

Silent TCP connections (no TLS), and TLS connections with a valid client certificate that send their
request headers one byte every few seconds. Each is reopened ``RECONNECT`` seconds after the agent
closes it, as an attacker would keep up the pressure; everything ends at the deadline given.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.queues
import resource
import socket
import ssl
import time
from dataclasses import asdict, dataclass

from lab.namespaces import Amphora

RECONNECT = 1.0  # seconds before a connection the agent closed is opened again
RAMP = 500  # connections opened per tenth of a second at the start
SLOW_HEADERS = b"GET /1.0/info HTTP/1.1\r\nHost: amphora\r\nUser-Agent: " + b"s" * 4000 + b"\r\n\r\n"


@dataclass
class Tally:
    """What one kind of attacker saw."""

    opened: int = 0  # connections opened (reopened ones included)
    open: int = 0  # open now
    closed_by_agent: int = 0  # ended by the agent (EOF, reset, an answer)
    refused: int = 0  # connect or handshake failed
    peak_open: int = 0

    def up(self) -> None:
        """One more connection open."""
        self.opened += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)


@dataclass(frozen=True)
class Target:
    """Where the agent listens and how to pass its TLS check."""

    host: str
    port: int
    context: ssl.SSLContext
    server_name: str


async def _silent(target: Target, until: float, tally: Tally) -> None:
    """One connection that never speaks; reopened after the agent closes it."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), 10)
        except (OSError, TimeoutError):
            tally.refused += 1
            await asyncio.sleep(RECONNECT)
            continue
        tally.up()
        try:
            await asyncio.wait_for(reader.read(1), max(until - loop.time(), 0.01))
            tally.closed_by_agent += 1
        except TimeoutError:
            pass
        except OSError:
            tally.closed_by_agent += 1
        finally:
            tally.open -= 1
            writer.close()
        await asyncio.sleep(RECONNECT)


async def _slow(target: Target, until: float, every: float, tally: Tally) -> None:
    """One TLS connection (valid certificate) sending its headers one byte every ``every`` seconds."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host, target.port, ssl=target.context, server_hostname=target.server_name
                ),
                20,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            tally.refused += 1
            await asyncio.sleep(RECONNECT)
            continue
        tally.up()
        try:
            for byte in SLOW_HEADERS:
                writer.write(bytes([byte]))
                try:
                    if await asyncio.wait_for(reader.read(1), every) or reader.at_eof():
                        tally.closed_by_agent += 1
                        break
                except TimeoutError:
                    pass
                if loop.time() >= until:
                    break
        except (OSError, ssl.SSLError):
            tally.closed_by_agent += 1
        finally:
            tally.open -= 1
            writer.close()
        await asyncio.sleep(RECONNECT)


async def _attack(target: Target, silent: int, slow: int, seconds: float, every: float) -> dict[str, Tally]:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    tallies = {"silent": Tally(), "slow": Tally()}
    tasks = []
    for index in range(silent + slow):
        if index % RAMP == 0:
            await asyncio.sleep(0.1)
        if index < slow:
            tasks.append(asyncio.create_task(_slow(target, until, every, tallies["slow"])))
        else:
            tasks.append(asyncio.create_task(_silent(target, until, tallies["silent"])))
    await asyncio.gather(*tasks, return_exceptions=True)
    return tallies


def _run(
    target: Target,
    silent: int,
    slow: int,
    seconds: float,
    every: float,
    queue: multiprocessing.queues.Queue[dict[str, dict[str, int]]],
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tallies = asyncio.run(_attack(target, silent, slow, seconds, every))
    queue.put({name: asdict(tally) for name, tally in tallies.items()})


@dataclass
class Attack:
    """The attacker process: ``start``, then ``result`` once its time is up."""

    target: Target
    silent: int
    slow: int
    seconds: float
    every: float = 2.0

    def start(self) -> None:
        """Fork the attacker (it inherits the TLS context; nothing is pickled)."""
        ctx = multiprocessing.get_context("fork")
        self._queue: multiprocessing.queues.Queue[dict[str, dict[str, int]]] = ctx.Queue()
        self._process = ctx.Process(
            target=_run, args=(self.target, self.silent, self.slow, self.seconds, self.every, self._queue)
        )
        self.started = time.monotonic()
        self._process.start()

    def result(self) -> dict[str, dict[str, int]]:
        """The attacker's tallies (its connections are closed by then); it is killed if it hangs."""
        try:
            return self._queue.get(timeout=self.seconds + 120)
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)


# -- one connection at a time: how long the agent lets it live -------------------------------------
def closes(sock: socket.socket, limit: float) -> tuple[float | None, str]:
    """Seconds until the agent closes ``sock`` (None if not within ``limit``), and what it said."""
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return None, "no answer"
        except OSError:
            pass
    return time.monotonic() - started, data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"


def trickle(amp: Amphora, lb_id: str, headers_only: bool, every: float) -> tuple[float | None, str]:
    """A request sent one byte every ``every`` seconds: the headers, or a 1,000-byte config body."""
    sock = amp.tls_socket()
    path = f"/1.0/loadbalancer/{amp.amphora_id}/{lb_id}/haproxy"
    head = f"PUT {path} HTTP/1.1\r\nHost: amphora\r\nContent-Length: 1000\r\n\r\n".encode()
    data = head * 10 if headers_only else b"#" * 1000
    started = time.monotonic()
    sock.settimeout(every)
    with sock:
        if not headers_only:
            sock.sendall(head)
        for byte in data:
            if time.monotonic() - started > 90:
                break
            try:
                sock.send(bytes([byte]))
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started, "closed"
            return time.monotonic() - started, answer.split(b"\r\n", 1)[0].decode() or "closed"
    return None, "still open after 90 s"

"""``make demo``: one amphora on this machine, a load balancer with two listeners, traffic through both.

Everything runs in network namespaces this process makes (it first moves itself into a private one),
so the host's interfaces, routes and firewall are never touched. The load balancer is created through
the agent's HTTPS API only, with a haproxy config in the shape the Octavia controller renders, and
everything (agent, haproxy, member servers, namespaces, files) is removed at the end, also after an
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from lab import namespaces
from lab.configs import (
    CLIENT_ADDRESS,
    HAPROXY_MEMBER_SIDE,
    MEMBER_HOSTS,
    VIP,
    Listener,
    Member,
    fixed_id,
    http_get,
    render_config,
    rss_mib,
)
from lab.namespaces import preflight

LB_ID = fixed_id("loadbalancer")
DEMO_LISTENERS = (
    Listener(
        "http-listener",
        "HTTP",
        80,
        (Member("http-member-1", MEMBER_HOSTS[0], 80), Member("http-member-2", MEMBER_HOSTS[1], 80)),
    ),
    Listener(
        "tcp-listener",
        "TCP",
        8080,
        (Member("tcp-member-1", MEMBER_HOSTS[0], 8080), Member("tcp-member-2", MEMBER_HOSTS[1], 8080)),
    ),
)


@dataclass
class DemoResult:
    """What the demo saw: which member answered how often, per listener name."""

    answers: dict[str, Counter[str]] = field(default_factory=dict)
    listeners: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def balanced(self) -> bool:
        """Whether every member of every demo listener answered at least once."""
        return all(
            set(self.answers.get(listener.name, {})) >= {m.name for m in listener.members}
            for listener in DEMO_LISTENERS
        )


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


class Printer:
    """Numbered steps and indented lines, for an operator reading along."""

    def __init__(self, out: TextIO, steps: int) -> None:
        self.out, self.steps, self.step_no = out, steps, 0

    def step(self, text: str) -> None:
        """Start the next numbered step."""
        self.step_no += 1
        self.out.write(f"\n[{self.step_no}/{self.steps}] {text}\n")
        self.out.flush()

    def line(self, text: str = "") -> None:
        """An indented line under the current step."""
        self.out.write(f"      {text}\n" if text else "\n")
        self.out.flush()


def _check(response: Any, what: str, expected: int) -> Any:
    """The response if it has the expected status, else a DemoError naming the request."""
    if response.status_code != expected:
        raise DemoError(
            f"{what} answered {response.status_code}, expected {expected}: {response.text[:2000]}"
        )
    return response


def send_traffic(listener: Listener, count: int) -> Counter[str]:
    """``count`` requests on new connections through one listener: member name -> answers."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        try:
            status, body, _ = http_get(VIP, listener.port)
        except OSError as exc:
            raise DemoError(f"request to {VIP}:{listener.port} ({listener.name}) failed: {exc}") from exc
        if status != 200:
            raise DemoError(f"{VIP}:{listener.port} ({listener.name}) answered HTTP {status}")
        seen[body.decode(errors="replace")] += 1
    return seen


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so a second Ctrl-C cannot leave debris."""
    try:
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run(out: TextIO, requests_per_listener: int = 10, show_config: bool = False) -> DemoResult:
    """The whole demo in the current network namespace; everything it made is removed on return."""
    p = Printer(out, 6)
    result = DemoResult()
    with tempfile.TemporaryDirectory(prefix="ampdemo") as tmp:  # short: unix socket paths <= 108 bytes
        amp = namespaces.Amphora(Path(tmp))
        members = namespaces.Backends()
        try:
            _create(p, amp, members)
            _load_balancer(p, amp, show_config)
            _traffic(p, result, requests_per_listener)
            _observe(p, amp, result)
            _delete(p, amp)
        except Exception:
            if amp.log_file.exists():
                tail = amp.log_file.read_text(errors="replace").splitlines()[-15:]
                p.line("last lines of the agent log:")
                for text in tail:
                    p.line(f"  {text}")
            raise
        finally:
            with signals_deferred():
                members.stop()
                amp.destroy()
            p.line("agent, haproxy, member servers, links and namespaces removed")
    return result


def _create(p: Printer, amp: namespaces.Amphora, members: namespaces.Backends) -> None:
    p.step("Create an amphora: a network namespace with a throwaway CA, certificates and the agent")
    amp.create()
    amp.start_agent()
    assert amp.process is not None
    p.line(f"namespace {amp.name}, agent pid {amp.process.pid}, API {amp.url} (mutual TLS)")
    p.line(f"amphora id {amp.amphora_id}; haproxy runs in namespace {amp.haproxy_ns}")
    p.step("Wire the tenant network and start the member servers")
    amp.wire_tenant(
        vips=[f"{VIP}/24"],
        member_addresses=[CLIENT_ADDRESS, *(f"{host}/24" for host in MEMBER_HOSTS)],
        haproxy_side=[HAPROXY_MEMBER_SIDE],
    )
    p.line(f"VIP {VIP} in the haproxy namespace; clients and members on this side")
    for listener in DEMO_LISTENERS:
        for member in listener.members:
            members.start(member.address, member.port, member.name)
            p.line(f"member {member.name:<14} {member.address}:{member.port}  (answers its name)")


def _load_balancer(p: Printer, amp: namespaces.Amphora, show_config: bool) -> None:
    p.step(f"Create load balancer {LB_ID} through the agent's API")
    config = render_config(LB_ID, VIP, DEMO_LISTENERS, amp.base)
    for listener in DEMO_LISTENERS:
        p.line(f"listener {listener.id}  {listener.protocol:<4} {VIP}:{listener.port}")
    if show_config:
        for text in config.decode().splitlines():
            p.line(f"| {text}")
    with amp.client() as api:
        started = time.monotonic()
        put_path = f"/1.0/loadbalancer/{amp.amphora_id}/{LB_ID}/haproxy"
        _check(api.put(put_path, content=config), f"PUT {put_path}", 202)
        put_ms = (time.monotonic() - started) * 1000
        p.line(f"PUT {put_path.replace(LB_ID, '<lb>')}  -> 202 ({put_ms:.0f} ms, checked with haproxy -c)")
        started = time.monotonic()
        reload_path = f"/1.0/loadbalancer/{LB_ID}/reload"
        reply = _check(api.put(reload_path), f"PUT {reload_path}", 202).json()
        reload_ms = (time.monotonic() - started) * 1000
        details = str(reply.get("details", "")).replace("\n", "; ")
        p.line(f"PUT /1.0/loadbalancer/<lb>/reload -> 202 ({reload_ms:.0f} ms): {details}")
    for listener in DEMO_LISTENERS:
        if not namespaces.wait_until(lambda port=listener.port: http_get(VIP, port)[0] == 200, 15):
            raise DemoError(f"{VIP}:{listener.port} ({listener.name}) did not answer within 15 s")


def _traffic(p: Printer, result: DemoResult, count: int) -> None:
    p.step(f"Send {count} requests through each listener (a new connection each)")
    p.line(f"{'listener':<16} {'protocol':<9} {'address':<20} {'member':<15} answers")
    p.line("-" * 70)
    for listener in DEMO_LISTENERS:
        seen = send_traffic(listener, count)
        result.answers[listener.name] = seen
        for index, member in enumerate(listener.members):
            head = (
                (listener.name, listener.protocol, f"{VIP}:{listener.port}") if index == 0 else ("", "", "")
            )
            p.line(f"{head[0]:<16} {head[1]:<9} {head[2]:<20} {member.name:<15} {seen[member.name]:>7}")
        strangers = sorted(set(seen) - {m.name for m in listener.members})
        if strangers:
            raise DemoError(f"{listener.name} answered from unexpected members: {strangers}")


def _observe(p: Printer, amp: namespaces.Amphora, result: DemoResult) -> None:
    p.step("What the agent reports")
    with amp.client() as api:
        result.listeners = _check(api.get("/1.0/listeners"), "GET /1.0/listeners", 200).json()
        result.details = _check(api.get("/1.0/details"), "GET /1.0/details", 200).json()
    names = {listener.id: listener.name for listener in DEMO_LISTENERS}
    p.line("GET /1.0/listeners")
    for row in result.listeners:
        p.line(f"  {row['uuid']}  {row['type']:<5} {row['status']:<8} ({names.get(row['uuid'], '?')})")
    d = result.details
    memory = d.get("memory", {})
    assert amp.process is not None
    p.line("GET /1.0/details (a few of its figures)")
    for label, value in (
        ("haproxy version", d.get("haproxy_version")),
        ("agent version", d.get("agent_version")),
        ("running haproxy processes", d.get("haproxy_count")),
        ("listeners", len(d.get("listeners", []))),
        ("topology", d.get("topology")),
        ("cpu count / load", f"{d.get('cpu_count')} / {' '.join(map(str, d.get('load', [])))}"),
        (
            "memory total / available",
            f"{memory.get('total', 0) // 1024} MiB / {memory.get('available', 0) // 1024} MiB",
        ),
    ):
        p.line(f"  {label:<26} {value}")
    p.line(f"  {'agent RSS (from /proc)':<26} {rss_mib(amp.process.pid):.1f} MiB")


def _delete(p: Printer, amp: namespaces.Amphora) -> None:
    p.step("Delete the load balancer through the API and clean up")
    with amp.client() as api:
        _check(api.delete(f"/1.0/listeners/{LB_ID}"), f"DELETE /1.0/listeners/{LB_ID}", 200)
        left = _check(api.get("/1.0/listeners"), "GET /1.0/listeners", 200).json()
    p.line(f"DELETE /1.0/listeners/<lb> -> 200; GET /1.0/listeners -> {left}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the demo in a private network namespace; 0 when both listeners balanced over both members."""
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=10, help="requests per listener (default 10)")
    parser.add_argument("--show-config", action="store_true", help="print the haproxy config sent")
    args = parser.parse_args(argv)
    problem = preflight()
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    print("amphora-agent demo: one amphora, one load balancer, two listeners, four members")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        namespaces.isolate()  # first, while single-threaded: nothing below touches the host's network
        result = run(sys.stdout, max(2, args.requests), args.show_config)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started was removed", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    if not result.balanced():
        print(f"\ndemo FAILED: a member never answered: {dict(result.answers)}", file=sys.stderr)
        return 1
    print("\nDemo finished: both listeners balanced requests over both of their members.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

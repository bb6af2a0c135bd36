"""``amphoractl metrics``: what a PROMETHEUS listener answers, read where Prometheus's answer is made.

The controller never asks the agent for metrics: they live on ``127.0.0.1:9102`` inside the haproxy
namespace, where the listener's haproxy backend reads them. So this command reads that address from
inside the namespace (root on the amphora), or any URL given (a PROMETHEUS listener's VIP and port,
from wherever it is reachable). It prints the same bytes Prometheus gets, or a chosen subset.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit

import typer

from amphora_agent.ctl import render
from amphora_agent.ctl.app import JsonOpt, app, fail, json_mode
from amphora_agent.metrics.exposition import Exposition, ExpositionError, Sample, parse

DEFAULT_URL = "http://127.0.0.1:9102/metrics"


def read(url: str, namespace: str | None, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a GET on ``url``, made inside ``namespace`` when given."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url}")
    host, port = parts.hostname, parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def get() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", target, headers={"User-Agent": "amphoractl"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    if namespace is None:
        return get()
    from amphora_agent.system import netns

    return netns.call_in(namespace, get)


def select(found: Exposition, families: Sequence[str], ids: Sequence[str]) -> list[Sample]:
    """Samples whose family name contains one of ``families`` and a label value one of ``ids``."""
    return [
        sample
        for sample in found.samples
        if (not families or any(f in sample.name for f in families))
        and (not ids or any(i in value for value in sample.labels.values() for i in ids))
    ]


def raw_text(found: Exposition, chosen: Sequence[Sample]) -> str:
    """The chosen samples in the text format, each family with its HELP and TYPE lines once."""
    lines: list[str] = []
    seen: set[str] = set()
    for sample in chosen:
        if sample.name not in seen:
            seen.add(sample.name)
            if sample.name in found.helps:
                lines.append(f"# HELP {sample.name} {found.helps[sample.name]}")
            if sample.name in found.types:
                lines.append(f"# TYPE {sample.name} {found.types[sample.name]}")
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
        lines.append(
            f"{sample.name}{{{labels}}} {sample.value}" if labels else f"{sample.name} {sample.value}"
        )
    return "".join(line + "\n" for line in lines)


@app.command()
def metrics(
    ctx: typer.Context,
    netns: Annotated[
        str,
        typer.Option(
            envvar="AMPHORA_NETNS",
            help="The haproxy namespace to read 127.0.0.1:9102 in (needs root on the amphora).",
        ),
    ] = "amphora-haproxy",
    url: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Read this http:// URL instead, from here (e.g. a PROMETHEUS listener's VIP:port).",
        ),
    ] = None,
    family: Annotated[
        list[str] | None,
        typer.Option("--family", "-f", help="Keep families whose name contains this (repeatable)."),
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="Keep samples with a label value containing this, e.g. a listener id."),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the text format (what Prometheus reads).")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the answer.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """The Prometheus metrics of PROMETHEUS listeners (octavia_* families), all or some.

    Exits 1 when the endpoint answers an error (502: haproxy's exporter unreadable), 3 when it
    cannot be reached.
    """
    namespace = None if url else netns
    try:
        status, body = read(url or DEFAULT_URL, namespace, timeout)
    except ValueError as exc:
        fail(ctx, render.EXIT_USAGE, None, str(exc))
    except PermissionError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"cannot enter namespace {netns} (root needed)", str(exc))
    except FileNotFoundError as exc:
        fail(ctx, render.EXIT_USAGE, None, f"no namespace {netns}", str(exc))
    except (OSError, http.client.HTTPException) as exc:
        fail(ctx, render.EXIT_UNREACHABLE, None, f"{url or DEFAULT_URL} unreachable", str(exc))
    text = body.decode("utf-8", errors="replace")
    if status != 200:
        fail(ctx, render.EXIT_AGENT_ERROR, status, "the metrics endpoint answered an error", text.strip())
    if raw and not family and not ids:
        sys.stdout.write(text)
        return
    try:
        found = parse(text)
    except ExpositionError as exc:
        fail(ctx, render.EXIT_AGENT_ERROR, status, "not the Prometheus text format", str(exc))
    chosen = select(found, family or [], ids or [])
    if raw:
        sys.stdout.write(raw_text(found, chosen))
    elif json_mode(ctx, as_json):
        sys.stdout.write(json.dumps([vars(s) for s in chosen], indent=2) + "\n")
    else:
        rows = [(s.name, ", ".join(f"{k}={v}" for k, v in s.labels.items()) or "-", s.value) for s in chosen]
        render.rows(
            f"metrics ({len(chosen)} of {len(found.samples)} samples)", ("family", "labels", "value"), rows
        )

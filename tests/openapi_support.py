"""The OpenAPI document as test data: its operations, the app's routes, and response validation."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

# Operations the document describes whose route is not served yet, as (METHOD, path template).
# Every one of them must be served eventually: the coverage test fails when an entry here is served
# (remove it then) and when a documented operation is neither served nor listed here.
PENDING: frozenset[tuple[str, str]] = frozenset()

Operation = tuple[str, str]


@functools.cache
def document() -> dict[str, Any]:
    """docs/openapi.yaml, parsed."""
    loaded = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def normalize(path: str) -> str:
    """A path template with its parameter names dropped: ``/a/{x}/b`` -> ``/a/{}/b``."""
    return re.sub(r"\{[^}/]*\}", "{}", path)


def documented() -> dict[Operation, str]:
    """(METHOD, normalized path) -> the document's path template, for every operation."""
    found = {}
    for path, item in document()["paths"].items():
        for method in METHODS:
            if method in item:
                found[(method.upper(), normalize(path))] = path
    return found


class _Anything:
    """Stands in for every service while the route table is built (no handler runs)."""

    def __getattr__(self, name: str) -> _Anything:
        return _Anything()

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return _Anything()


def served() -> set[Operation]:
    """(METHOD, normalized path) of every route of the app, as the composition root wires it."""
    from amphora_agent.api import build_routes

    routes = build_routes(_Anything())  # type: ignore[arg-type]
    found = set()
    for route in routes:
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET route
                found.add((method, normalize(route.path)))
    return found


def is_pending(method: str, template: str) -> bool:
    """Whether the documented operation is still waiting for its route."""
    return (method.upper(), template) in PENDING


def _regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]*\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The document's (template, operation) for a concrete request; literal segments win."""
    candidates = []
    for template, item in document()["paths"].items():
        operation = item.get(method.lower())
        if operation is not None and _regex(template).match(path):
            candidates.append((template.count("{"), template, operation))
    assert candidates, f"{method} {path} is not in the document"
    _, template, operation = min(candidates, key=lambda c: c[0])
    return template, operation


def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (responses, headers)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = document()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, Mapping)
    return target


def validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for a schema of the document (its ``$ref``s resolve)."""
    root = {**schema, "components": document()["components"]}
    return Draft202012Validator(root)


def schema_errors(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Every violation of ``schema`` by ``value`` (empty when it validates)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(value)
    ]


def check_response(
    method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
) -> tuple[str, dict[str, Any]]:
    """Assert that an answer is documented and matches its schema; return (template, operation)."""
    template, operation = find_operation(method, path)
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented: {body[:300]!r}"
    response = resolve(responses[str(status)])
    content = response.get("content", {})
    media = headers.get("content-type", "").split(";")[0].strip()
    assert media in content, f"{method} {template} {status}: content type {media!r} not in {list(content)}"
    schema = content[media].get("schema", {})
    value: Any = body.decode("utf-8")
    if media == "application/json":
        value = json.loads(body)
    elif media == "application/yaml":  # the schema describes the parsed document
        value = yaml.safe_load(body)
    problems = schema_errors(schema, value)
    assert not problems, f"{method} {template} {status}: {problems} in {value!r}"[:2000]
    for name, header in response.get("headers", {}).items():
        if name.lower() in headers:
            problems = schema_errors(resolve(header)["schema"], headers[name.lower()])
            assert not problems, f"{method} {template} {status}: header {name}: {problems}"
    return template, operation


def check_router_error(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """A router answer (no route, wrong method) is JSON in the document's Error shape."""
    assert headers.get("content-type", "").startswith("application/json")
    problems = schema_errors({"$ref": "#/components/schemas/Error"}, json.loads(body))
    assert not problems, problems
    assert json.loads(body)["http_code"] == status

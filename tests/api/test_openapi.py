"""docs/openapi.yaml against the app's route table, the reference's route list and its own examples."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from amphora_agent.api import openapi_document
from tests import openapi_support

# The reference's route table (4.0), plus discovery as the controller sends it and this document.
REFERENCE_ROUTES = {
    ("GET", "/"),
    ("GET", "//"),
    ("GET", "/info"),
    ("GET", "/1.0/info"),
    ("GET", "/1.0/details"),
    ("PUT", "/1.0/loadbalancer/{}/{}/haproxy"),
    ("GET", "/1.0/loadbalancer/{}/haproxy"),
    ("PUT", "/1.0/loadbalancer/{}/{}"),
    ("DELETE", "/1.0/listeners/{}"),
    ("GET", "/1.0/listeners"),
    ("PUT", "/1.0/loadbalancer/{}/certificates/{}"),
    ("GET", "/1.0/loadbalancer/{}/certificates/{}"),
    ("DELETE", "/1.0/loadbalancer/{}/certificates/{}"),
    ("PUT", "/1.0/certificate"),
    ("PUT", "/1.0/listeners/{}/{}/udp_listener"),
    ("GET", "/1.0/listeners/{}/udp_listener"),
    ("PUT", "/1.0/vrrp/upload"),
    ("PUT", "/1.0/vrrp/{}"),
    ("POST", "/1.0/plug/vip/{}"),
    ("POST", "/1.0/plug/network"),
    ("GET", "/1.0/interface/{}"),
    ("PUT", "/1.0/interface/{}/rules"),
    ("PUT", "/1.0/config"),
    ("GET", "/1.0/openapi.yaml"),
}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) of every operation in the document."""
    for path, item in openapi_support.document()["paths"].items():
        for method in openapi_support.METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def test_every_app_route_is_documented() -> None:
    """No route of the app is missing from the document."""
    missing = openapi_support.served() - set(openapi_support.documented())
    assert not missing, f"routes served but not documented: {sorted(missing)}"


def test_every_documented_operation_is_served_or_pending() -> None:
    """Each documented operation is served, or listed as pending; a pending one that is served is stale."""
    documented = set(openapi_support.documented())
    unserved = documented - openapi_support.served() - openapi_support.PENDING
    assert not unserved, f"documented but neither served nor pending: {sorted(unserved)}"
    stale = openapi_support.PENDING & openapi_support.served()
    assert not stale, f"served now, remove from PENDING: {sorted(stale)}"
    assert documented >= openapi_support.PENDING, (
        f"pending but not documented: {sorted(openapi_support.PENDING - documented)}"
    )


def test_document_covers_the_reference_route_table() -> None:
    """All 21 routes of the reference, discovery as the controller sends it and /info, and nothing else."""
    assert set(openapi_support.documented()) == REFERENCE_ROUTES


def test_operations_are_complete() -> None:
    """Unique operationIds; a summary, responses with descriptions, and JSON errors for every 4xx/5xx."""
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))
    for method, path, op in operations():
        assert op.get("summary"), (method, path)
        for status, response in op["responses"].items():
            response = openapi_support.resolve(response)
            assert response.get("description"), (method, path, status)
            if int(status) >= 400:
                assert list(response["content"]) == ["application/json"], (method, path, status)
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_path_parameters_are_declared() -> None:
    """Every ``{name}`` in a path is declared as a required path parameter, and nothing more."""
    for path, item in openapi_support.document()["paths"].items():
        declared = {openapi_support.resolve(p)["name"] for p in item.get("parameters", [])}
        for method in openapi_support.METHODS:
            if method in item:
                declared_here = declared | {
                    openapi_support.resolve(p)["name"] for p in item[method].get("parameters", [])
                }
                names = set(re.findall(r"\{([^}/]+)\}", path))
                assert declared_here == names, (method, path)


def _examples(media: dict[str, Any]) -> Iterator[Any]:
    if "example" in media:
        yield media["example"]
    for example in media.get("examples", {}).values():
        yield example["value"]


def example_cases() -> Iterator[Any]:
    """(where, schema, example) for every example of a body, a response or a parameter."""
    doc = openapi_support.document()
    for method, path, op in operations():
        bodies = op.get("requestBody", {}).get("content", {})
        for media_type, media in bodies.items():
            for example in _examples(media):
                yield pytest.param(media["schema"], example, id=f"{method} {path} body {media_type}")
        for status, response in op["responses"].items():
            for media_type, media in openapi_support.resolve(response).get("content", {}).items():
                for example in _examples(media):
                    yield pytest.param(media["schema"], example, id=f"{method} {path} {status} {media_type}")
    for name, param in doc["components"]["parameters"].items():
        if "example" in param:
            yield pytest.param(param["schema"], param["example"], id=f"parameter {name}")


@pytest.mark.parametrize(("schema", "example"), list(example_cases()))
def test_examples_match_their_schemas(schema: dict[str, Any], example: Any) -> None:
    """Every example in the document (most from the API spec) validates against its own schema."""
    assert openapi_support.schema_errors(schema, example) == []


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"$ref": "#/components/schemas/Ok"}, {"message": "Error"}),
        ({"$ref": "#/components/schemas/Ok"}, {"message": "OK", "extra": 1}),
        ({"$ref": "#/components/schemas/Error"}, {}),
        ({"$ref": "#/components/schemas/Error"}, {"http_code": 404}),
        ({"$ref": "#/components/schemas/Version"}, {"api_version": "0.5"}),
        (
            {"$ref": "#/components/schemas/Info"},
            {"hostname": "a", "haproxy_version": "x", "api_version": "1.0"},
        ),
        ({"$ref": "#/components/schemas/Listener"}, {"status": "UP", "uuid": "x", "type": "HTTP"}),
        ({"$ref": "#/components/schemas/Rule"}, {"protocol": "ICMP", "cidr": None, "port": 1}),
        ({"$ref": "#/components/schemas/Rule"}, {"protocol": "TCP", "cidr": None, "port": 70000}),
        ({"$ref": "#/components/schemas/PlugVip"}, {"subnet_cidr": "198.51.100.0/24", "gateway": None}),
    ],
)
def test_schemas_reject_what_the_controller_would_not_accept(schema: dict[str, Any], value: Any) -> None:
    """The schemas are strict enough to catch a wrong answer (a negative control for the checks above)."""
    assert openapi_support.schema_errors(schema, value)


def test_agent_serves_this_document() -> None:
    """The document the agent serves (package data) is docs/openapi.yaml byte for byte."""
    assert openapi_document() == openapi_support.DOCUMENT.read_bytes()

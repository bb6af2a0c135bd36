"""schemathesis against docs/openapi.yaml and a real agent over mutual TLS: every operation.

One agent in a lab amphora namespace serves a configured amphora: the documented example load
balancer stored and running on its VIP, the controller's VRRP config stored and keepalived running,
and an ``eth1`` in its haproxy namespace holding the documented ``ip_addr`` example. Generated
requests (documented examples, then valid and invalid data) reach real handlers, real haproxy and
real keepalived. Paths in generated bodies that name the controller's directories are mapped to the
lab amphora's, so haproxy and keepalived never touch a file outside it; the plug routes only find NICs
of the amphora namespace, so nothing can reach the host.

Every answer must be documented for its operation (status, content type, body schema, headers),
none may be a 5xx, and a request that violates the document (path parameters, JSON bodies) must be
refused with a 4xx. Bounded by default: ``AMPHORA_FUZZ_EXAMPLES`` generated cases per operation and
mode (5 unless set) besides the documented examples; ``AMPHORA_FUZZ_EXAMPLES=200 .venv/bin/pytest
tests/integration/test_fuzz_api.py`` is the longer run. Hypothesis is derandomized: a run repeats.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lab import namespaces
from lab.vrrp import keepalived_config
from tests import openapi_support
from tests.integration.helpers import SINGLE_HTTP_LB, SINGLE_HTTP_VIP, render

EXAMPLES = int(os.environ.get("AMPHORA_FUZZ_EXAMPLES", "5"))
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120 + 5 * EXAMPLES)]
ETH1_IP = "198.51.100.141"  # the document's IpAddr example, and the VRRP fixtures' vrrp_ip
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

schemathesis.serializer.alias("application/x-pem-file", "text/plain")  # PEM uploads are raw text
schema = schemathesis.openapi.from_path(str(openapi_support.DOCUMENT))
ANSWERS: Counter[tuple[str, str, int]] = Counter()  # (method, path template, status) -> answers


class AmphoraAdapter(HTTPAdapter):
    """Mutual TLS to one lab amphora: our client certificate, its CA, the amphora id as host name."""

    def __init__(self, amp: namespaces.Amphora) -> None:
        self._ctx = amp.ssl_context()
        self._name = amp.amphora_id
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
        """Every pool uses our context and checks the amphora id, as the controller does."""
        kwargs.update(ssl_context=self._ctx, server_hostname=self._name, assert_hostname=self._name)
        super().init_poolmanager(connections, maxsize, block, **kwargs)


@pytest.fixture(scope="module")
def fuzz_amphora(fixtures_dir: Path) -> Iterator[namespaces.Amphora]:
    """One configured amphora for the whole run: a running load balancer and a running keepalived."""
    with tempfile.TemporaryDirectory(prefix="amp") as path:
        amp = namespaces.Amphora(Path(path)).create()
        try:
            amp.start_agent()
            amp.wire_tenant(
                vips=[f"{SINGLE_HTTP_VIP}/24"], member_addresses=[], haproxy_side=[f"{ETH1_IP}/24"]
            )
            with amp.client() as api:
                config = render(fixtures_dir, "single-http.cfg", amp)
                api.put(f"/1.0/loadbalancer/{amp.amphora_id}/{SINGLE_HTTP_LB}/haproxy", content=config)
                api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
                vrrp = keepalived_config(fixtures_dir, 0, amp.base)
                api.put("/1.0/vrrp/upload", content=vrrp).raise_for_status()
                api.put("/1.0/vrrp/start").raise_for_status()
            yield amp
        finally:
            amp.destroy()


@pytest.fixture(scope="module")
def session(fuzz_amphora: namespaces.Amphora) -> Iterator[requests.Session]:
    """A kept-alive requests session to the agent."""
    with requests.Session() as s:
        s.mount("https://", AmphoraAdapter(fuzz_amphora))
        yield s


def localize(body: Any, amp: namespaces.Amphora) -> Any:
    """A text body with the controller's directories mapped to the lab amphora's."""
    if not isinstance(body, str):
        return body
    return body.replace("/var/lib/octavia", str(amp.base))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzz_amphora: namespaces.Amphora, session: requests.Session
) -> None:
    """Generated requests to every operation: no 5xx, every answer as the document describes it."""
    case.body = localize(case.body, fuzz_amphora)
    response = case.call(base_url=fuzz_amphora.url, session=session, timeout=60)
    ANSWERS[(case.operation.method.upper(), case.operation.path, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS if raw_body(case) else [*CHECKS, negative_data_rejection])


def raw_body(case: schemathesis.Case[Any]) -> bool:
    """Whether the operation takes a raw body (configs, PEMs): any bytes are a string there, so a
    "schema-violating" body (a number, an object, none at all) is just other text on the wire."""
    return any(not body.media_type.endswith("json") for body in case.operation.body)


def test_every_operation_was_called() -> None:
    """The run above reached every documented operation (prints what each answered, with ``-s``)."""
    if not ANSWERS:
        pytest.skip("the fuzz run above was not selected")
    called = {(method, openapi_support.normalize(path)) for method, path, _ in ANSWERS}
    assert called == set(openapi_support.documented()), set(openapi_support.documented()) - called
    for (method, path, status), count in sorted(ANSWERS.items()):
        print(f"{count:5d} x {status} {method} {path}")
    print(f"{sum(ANSWERS.values())} requests, {EXAMPLES} generated cases per operation and mode")

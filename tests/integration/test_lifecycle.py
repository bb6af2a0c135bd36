"""The haproxy lifecycle through the API, with real haproxy serving real traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import namespaces
from tests.integration.helpers import (
    SINGLE_HTTP_LB,
    SINGLE_HTTP_VIP,
    Load,
    get,
    render,
    wire_single_http,
)

pytestmark = pytest.mark.integration


def test_upload_reload_serves_and_balances(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """A controller config uploaded and reloaded answers on the VIP, balanced over both members."""
    wire_single_http(amphora, backends)
    with amphora.client() as api:
        amp_id = amphora.amphora_id
        put = api.put(
            f"/1.0/loadbalancer/{amp_id}/{SINGLE_HTTP_LB}/haproxy",
            content=render(fixtures_dir, "single-http.cfg", amphora),
        )
        assert put.status_code == 202, put.text
        assert api.get("/1.0/listeners").json()[0]["status"] == "STOPPED"
        reload = api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload")
        assert reload.status_code == 202
        assert reload.json()["details"].endswith(f"haproxy daemon for {SINGLE_HTTP_LB} started")
        assert api.get("/1.0/listeners").json() == [
            {"status": "ACTIVE", "uuid": "922d8f42-59a5-4a50-b10d-9632277e363e", "type": "HTTP"}
        ]
        seen = {get(SINGLE_HTTP_VIP)[1] for _ in range(10)}
        assert seen == {b"member-1", b"member-2"}


def test_fifty_reloads_under_load_lose_nothing(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """50 reloads while clients open new connections: zero failed requests."""
    wire_single_http(amphora, backends)
    with amphora.client() as api:
        api.put(
            f"/1.0/loadbalancer/{amphora.amphora_id}/{SINGLE_HTTP_LB}/haproxy",
            content=render(fixtures_dir, "single-http.cfg", amphora),
        ).raise_for_status()
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
        with Load(SINGLE_HTTP_VIP) as load:
            for _ in range(50):
                assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").status_code == 202
        assert load.failed == 0, load.errors[:5]
        assert load.ok > 100


def test_reload_that_cannot_bind_fails_and_old_worker_keeps_serving(
    amphora: namespaces.Amphora, backends: namespaces.Backends, fixtures_dir: Path
) -> None:
    """A config that passes ``haproxy -c`` but cannot bind: 500 on reload, the LB keeps serving."""
    wire_single_http(amphora, backends)
    good = render(fixtures_dir, "single-http.cfg", amphora)
    url = f"/1.0/loadbalancer/{amphora.amphora_id}/{SINGLE_HTTP_LB}/haproxy"
    with amphora.client() as api:
        api.put(url, content=good).raise_for_status()
        api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").raise_for_status()
        unbindable = good.replace(b"bind 198.51.100.10:80", b"bind 198.51.100.99:80")
        assert api.put(url, content=unbindable).status_code == 202
        failed = api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload")
        assert failed.status_code == 500
        assert failed.json()["message"] == "Error reloading haproxy"
        assert get(SINGLE_HTTP_VIP)[0] == 200
        api.put(url, content=good).raise_for_status()
        assert api.put(f"/1.0/loadbalancer/{SINGLE_HTTP_LB}/reload").status_code == 202
        assert get(SINGLE_HTTP_VIP)[0] == 200

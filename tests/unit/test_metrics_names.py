"""The agent's rename table says what the existing proxy's table says, entry by entry."""

from __future__ import annotations

import pytest

from amphora_agent.metrics import names
from tests.metrics_contract import DASHBOARD_FAMILIES, LABELS, PROXY_MAP


def test_the_same_haproxy_metrics_are_kept() -> None:
    """Every metric the proxy keeps is kept, and nothing else."""
    assert sorted(names.METRICS) == sorted(PROXY_MAP)


@pytest.mark.parametrize("haproxy", sorted(PROXY_MAP))
def test_each_metric_gets_the_proxys_name_help_and_label_keys(haproxy: str) -> None:
    """Name, HELP override and label renames of one metric, as the proxy has them."""
    rename = names.METRICS[haproxy]
    assert (rename.octavia, rename.help) == PROXY_MAP[haproxy]
    prefix = next(p for p in LABELS if haproxy.startswith(p))
    assert dict(rename.labels) == LABELS[prefix]


def test_no_two_metrics_share_a_name() -> None:
    """Each Octavia family comes from one haproxy metric (a family appears once per scrape)."""
    targets = [rename.octavia for rename in names.METRICS.values()]
    assert len(targets) == len(set(targets))


def test_every_family_of_octavias_grafana_dashboard_is_produced() -> None:
    """The dashboard Octavia ships queries only families the agent writes (or the two gauges)."""
    produced = {rename.octavia for rename in names.METRICS.values()}
    produced |= {"octavia_loadbalancer_cpu", "octavia_loadbalancer_memory"}
    assert set(DASHBOARD_FAMILIES) - produced == set()

"""/proc parsers and network rates behind /1.0/details, with the existing agent's keys and types."""

from __future__ import annotations

from pathlib import Path

import pytest

from amphora_agent import info

MEMINFO = """\
MemTotal:        1014720 kB
MemFree:          614400 kB
MemAvailable:     800000 kB
Buffers:           51200 kB
Cached:           204800 kB
SwapCached:          123 kB
Active:           100000 kB
SwapTotal:             0 kB
Shmem:              4096 kB
Slab:              20480 kB
Committed_AS:     300000 kB
HugePages_Total:       0
"""

NET_DEV = """\
Inter-|   Receive                                    |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls
    lo:    1234      10    0    0    0     0     0     0     1234      10    0    0    0     0
  eth1: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0
  eth2:18446744073709551615 1 0 0 0 0 0 0 42 1 0 0 0 0 0 0
 short: 1 2 3
"""


def test_parse_meminfo_keys_and_types() -> None:
    """Memory figures are ints in kB under the existing agent's keys; swap_used is SwapCached."""
    assert info.parse_meminfo(MEMINFO) == {
        "total": 1014720,
        "free": 614400,
        "available": 800000,
        "buffers": 51200,
        "cached": 204800,
        "swap_used": 123,
        "shared": 4096,
        "slab": 20480,
        "committed_as": 300000,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("MemTotal: 5 kB\n", 0),
        ("MemFree: 7 kB\nNoise\nEmpty:\n", 7),
    ],
    ids=["empty", "missing", "junk-lines"],
)
def test_parse_meminfo_missing_fields_are_zero(text: str, expected: int) -> None:
    """A field the kernel does not report is 0, and junk lines are skipped."""
    assert info.parse_meminfo(text)["free"] == expected


def test_parse_meminfo_on_this_host() -> None:
    """The real /proc/meminfo gives ints for every key, with free <= total."""
    memory = info.parse_meminfo(Path("/proc/meminfo").read_text())
    assert all(isinstance(value, int) for value in memory.values())
    assert 0 < memory["free"] <= memory["total"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "cpu  4705 356 584 3699 23 23 7 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n",
            {"total": 9397, "user": "4705", "system": "584", "soft_irq": "7"},
        ),
        ("cpu 1 2 3 4 5 6 7\n", {"total": 28, "user": "1", "system": "3", "soft_irq": "7"}),
        ("cpu  0 0 0 0 0 0 0 0 0 0", {"total": 0, "user": "0", "system": "0", "soft_irq": "0"}),
    ],
    ids=["ten-fields", "seven-fields", "zero"],
)
def test_parse_cpu(line: str, expected: dict[str, object]) -> None:
    """The cpu line: total is the int sum, user/system/soft_irq the raw strings of fields 1, 3, 7."""
    assert info.parse_cpu(line) == expected


def test_parse_cpu_on_this_host() -> None:
    """The real /proc/stat gives an int total and digit strings for the three parts."""
    cpu = info.parse_cpu(Path("/proc/stat").read_text())
    assert isinstance(cpu["total"], int)
    assert all(isinstance(cpu[k], str) and cpu[k].isdigit() for k in ("user", "system", "soft_irq"))


def test_parse_net_dev() -> None:
    """Every interface maps to (tx bytes, rx bytes); headers and short lines are skipped."""
    assert info.parse_net_dev(NET_DEV) == {
        "lo": (1234, 1234),
        "eth1": (7000, 5000),
        "eth2": (42, 18446744073709551615),
    }


class Counters:
    """A fake counter source: returns the queued readings in turn, or raises when told."""

    def __init__(self, *readings: dict[str, tuple[int, int]]) -> None:
        self.readings = list(readings)
        self.fail = False

    def __call__(self) -> dict[str, tuple[int, int]]:
        if self.fail:
            raise OSError("namespace gone")
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_network_rates_first_sample_has_zero_rates() -> None:
    """The first sample reports the counters of eth* links only, with zero rates."""
    rates = info.NetworkRates(Counters({"lo": (9, 9), "eth1": (100, 200), "veth0": (1, 1)}))
    assert rates.sample() == {
        "eth1": {"network_tx": 100, "network_rx": 200, "network_tx_rate": 0.0, "network_rx_rate": 0.0}
    }


@pytest.mark.parametrize(
    ("second", "tx_positive", "rx_positive"),
    [
        ((1100, 200), True, False),
        ((100, 5200), False, True),
        ((0, 0), False, False),  # counters reset (link re-created): never negative
    ],
    ids=["tx", "rx", "reset"],
)
def test_network_rates_between_samples(second: tuple[int, int], tx_positive: bool, rx_positive: bool) -> None:
    """Rates are the counter growth per second between samples, floored at zero."""
    rates = info.NetworkRates(Counters({"eth1": (100, 200)}, {"eth1": second}))
    rates.MIN_INTERVAL = 0.0
    rates.sample()
    eth1 = rates.sample()["eth1"]
    assert (eth1["network_tx"], eth1["network_rx"]) == second
    assert (eth1["network_tx_rate"] > 0, eth1["network_rx_rate"] > 0) == (tx_positive, rx_positive)
    assert eth1["network_tx_rate"] >= 0 and eth1["network_rx_rate"] >= 0


def test_network_rates_unreadable_namespace_is_empty() -> None:
    """A counter source that fails gives an empty mapping, never an error."""
    source = Counters({"eth1": (1, 1)})
    source.fail = True
    assert info.NetworkRates(source).sample() == {}


def test_read_text_of_missing_file_is_empty() -> None:
    """A file that cannot be read gives "" (a missing optional source never fails /details)."""
    assert info.read_text("/nonexistent/file") == ""


def test_haproxy_binary_version() -> None:
    """The installed haproxy reports a version whose first two fields are ints (the controller's need)."""
    version = info.haproxy_binary_version(Path("/usr/sbin/haproxy"))
    major, minor = version.split(".")[:2]
    assert (int(major), int(minor)) >= (1, 6)


def test_haproxy_binary_version_missing_binary() -> None:
    """A missing binary gives "" rather than an error."""
    assert info.haproxy_binary_version(Path("/nonexistent/haproxy")) == ""


def test_package_version_of_missing_package() -> None:
    """A package no package manager knows gives ""."""
    assert info.package_version("surely-not-an-installed-package") == ""

"""The Prometheus text format (version 0.0.4): families the agent writes and a reader."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4"
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ExpositionError(ValueError):
    """Text that is not the Prometheus text format."""


def escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample_line(name: str, labels: Iterable[tuple[str, str]], value: int | float) -> str:
    """``name{key="value",...} value`` (without the newline)."""
    pairs = ",".join(f'{key}="{escape(val)}"' for key, val in labels)
    return f"{name}{{{pairs}}} {value}" if pairs else f"{name} {value}"


@dataclass(frozen=True)
class Family:
    """A metric family the agent writes itself: HELP, TYPE and its sample lines."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: tuple[str, ...] = ()

    def header(self) -> str:
        """The HELP and TYPE lines."""
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"

    def body(self) -> str:
        """The sample lines."""
        return "".join(line + "\n" for line in self.samples)

    def text(self) -> str:
        """The whole family."""
        return self.header() + self.body()


@dataclass(frozen=True)
class Sample:
    """One sample line read back: the name, its labels in order and the value as written."""

    name: str
    labels: dict[str, str]
    value: str


@dataclass
class Exposition:
    """A scrape read back: HELP and TYPE by family, and every sample in order."""

    helps: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def families(self) -> list[str]:
        """Family names in the order they first appear."""
        return list(dict.fromkeys([*self.helps, *(s.name for s in self.samples)]))


def _labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            raise ExpositionError(f"bad labels: {line[:200]!r}")
        labels[match[1]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], match[2])
        position = match.end()
    return labels


def parse(text: str) -> Exposition:
    """Read the text format; raise ExpositionError on a line it cannot be."""
    found = Exposition()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            words = line.split(" ", 3)
            if len(words) >= 3 and words[1] in ("HELP", "TYPE"):
                table = found.helps if words[1] == "HELP" else found.types
                table[words[2]] = words[3] if len(words) > 3 else ""
            continue
        found.samples.append(_sample(line))
    return found


def _sample(line: str) -> Sample:
    """``name[{labels}] value [timestamp]``."""
    brace = line.find("{")
    if brace < 0:
        name, _, tail = line.partition(" ")
        labels: dict[str, str] = {}
    else:
        close = line.rfind("}")
        if close < brace:
            raise ExpositionError(f"bad labels: {line[:200]!r}")
        name, tail = line[:brace], line[close + 1 :]
        labels = _labels(line[brace + 1 : close], line)
    values = tail.split()
    if not name.strip() or not values or len(values) > 2:
        raise ExpositionError(f"not a sample: {line[:200]!r}")
    return Sample(name.strip(), labels, values[0])

"""haproxy's exporter text in Octavia's terms (pure): the existing proxy's rewrite, plus the agent's families.

The result is what ``octavia-prometheus-proxy`` answers, byte for byte: the two amphora gauges
first, then haproxy's families in haproxy's order, renamed by ``names.METRICS`` (label keys too, HELP
texts where the proxy has its own), every line naming the internal PROMETHEUS frontend or backend
dropped, and every metric the table does not list dropped. Families the agent adds (IPVS) go into
the matching haproxy family, after haproxy's samples, so that each family appears once; new
families go last.

A scrape of 100 listeners is about 6 MB, so the work is done on bytes, a family at a time, with a
few whole-buffer operations, while haproxy's answer still arrives (``Rewriter``): haproxy prints each
family as ``# HELP``, ``# TYPE`` and samples that all start with the metric's name and its first
label. A family in any other shape is rewritten line by line (``_lines``), with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amphora_agent.metrics import names
from amphora_agent.metrics.exposition import Family

HELP = b"# HELP "
NEXT_HELP = b"\n# HELP "
TYPE = b"# TYPE "
INTERNAL = names.INTERNAL.encode()
CPU = "octavia_loadbalancer_cpu"
MEMORY = "octavia_loadbalancer_memory"


@dataclass(frozen=True)
class _Rename:
    """``names.Rename`` as the bytes the rewrite replaces."""

    octavia: bytes
    help_line: bytes | None  # the whole HELP line when the proxy has its own text
    labels: tuple[tuple[bytes, bytes], ...]  # (b"proxy=", b"listener=") ...


def _renames() -> dict[bytes, _Rename]:
    table = {}
    for name, rename in names.METRICS.items():
        octavia = rename.octavia.encode()
        help_line = f"# HELP {rename.octavia} {rename.help}\n".encode() if rename.help is not None else None
        labels = tuple((f"{old}=".encode(), f"{new}=".encode()) for old, new in rename.labels)
        table[name.encode()] = _Rename(octavia, help_line, labels)
    return table


RENAMES = _renames()


# -- the two amphora gauges ------------------------------------------------------------------------
def cpu_percent(load1: float, cpus: int) -> float:
    """The proxy's CPU figure: the 1-minute load average per core, in percent."""
    return load1 / max(cpus, 1) * 100


def memory_percent(meminfo: str) -> float:
    """The proxy's memory figure (psutil's ``percent``): (total - available) / total, in percent."""
    fields: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached") and rest.split():
            fields[key] = int(rest.split()[0])
    total = fields.get("MemTotal", 0)
    if total <= 0:
        return 0.0
    available = fields.get("MemAvailable")
    if available is None:  # kernels before 3.14: psutil's estimate
        available = fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
    return round((total - available) / total * 100, 1)


def amphora_families(cpu: float, memory: float) -> list[Family]:
    """``octavia_loadbalancer_cpu`` and ``octavia_loadbalancer_memory``, as the proxy prints them."""
    cpu_help = "Load balancer CPU utilization (percentage)."
    memory_help = "Load balancer memory utilization (percentage)."
    return [
        Family(CPU, "gauge", cpu_help, (f"{CPU} {cpu:.1f}",)),
        Family(MEMORY, "gauge", memory_help, (f"{MEMORY} {memory:.1f}",)),
    ]


# -- the general path: one line at a time ----------------------------------------------------------
def _relabel(text: bytes, labels: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """Label keys renamed where a key can stand: after ``{`` or ``,``."""
    for old, new in labels:
        text = text.replace(b"{" + old, b"{" + new).replace(b"," + old, b"," + new)
    return text


def _line(line: bytes) -> tuple[bytes, bytes] | None:
    """(octavia name, the line rewritten) for one line with its newline; None when it is dropped."""
    if INTERNAL in line:
        return None
    if line.startswith(b"#"):
        words = line.rstrip(b"\n").split(b" ", 3)
        rename = RENAMES.get(words[2]) if len(words) > 2 else None
        if rename is None:
            return None
        if words[1] == b"HELP" and rename.help_line is not None:
            return rename.octavia, rename.help_line
        return rename.octavia, line.replace(words[2], rename.octavia, 1)
    cut = min((i for i in (line.find(b"{"), line.find(b" ")) if i >= 0), default=-1)
    rename = RENAMES.get(line[:cut]) if cut > 0 else None
    if rename is None or (not rename.labels and line[cut : cut + 1] == b"{"):
        return None  # the proxy knows process metrics only without labels
    return rename.octavia, rename.octavia + _relabel(line[cut:], rename.labels)


def _lines(block: bytes) -> list[tuple[bytes, bytes]]:
    """Every line of ``block`` rewritten one at a time."""
    rewritten = (_line(line) for line in block.splitlines(keepends=True))
    return [line for line in rewritten if line is not None]


# -- the usual path: one family at a time -----------------------------------------------------------
def _samples(text: bytes, start: int, end: int) -> bytes:
    """``text[start:end]`` (whole lines) without the lines that name the internal PROMETHEUS proxies."""
    kept: list[bytes] = []
    position = start
    while (hit := text.find(INTERNAL, position, end)) >= 0:
        begin = max(text.rfind(b"\n", position, hit) + 1, position)
        stop = text.find(b"\n", hit, end)
        kept.append(text[position:begin])
        position = end if stop < 0 else stop + 1
    if not kept:
        return text[start:end]
    kept.append(text[position:end])
    return b"".join(kept)


def _family(text: bytes, start: int, end: int) -> tuple[bytes, list[bytes]] | None:
    """(octavia name, pieces) for the ``# HELP`` block ``text[start:end]``; (b"", []) when the family is
    dropped; None when the block is not in haproxy's shape (then ``_lines`` rewrites it).

    haproxy's shape: the HELP line, the TYPE line of the same metric, then only its samples, each
    starting with the name and the first label of the area (``{proxy=``; a space without labels).
    """
    help_end = text.find(b"\n", start, end)
    type_end = text.find(b"\n", help_end + 1, end) if help_end >= 0 else -1
    if type_end < 0 or text[end - 1 : end] != b"\n":
        return None
    space = text.find(b" ", start + len(HELP), help_end)
    name = text[start + len(HELP) : space if space >= 0 else help_end]
    if not text.startswith(TYPE + name + b" ", help_end + 1):
        return None
    rename = RENAMES.get(name)
    if rename is None:  # dropped, once every line is known to be this metric's
        lines = text.count(b"\n", type_end, end) - 1
        own = text.count(b"\n" + name + b"{", type_end, end)
        own += text.count(b"\n" + name + b" ", type_end, end) if own != lines else 0
        return (b"", []) if own == lines else None
    # the samples with the newline before them, so that every sample starts with b"\n" + its name
    samples = _samples(text, type_end, end)
    new = rename.octavia
    prefix, new_prefix = b"\n" + name + b" ", b"\n" + new + b" "
    if rename.labels:
        prefix, new_prefix = (
            b"\n" + name + b"{" + rename.labels[0][0],
            b"\n" + new + b"{" + rename.labels[0][1],
        )
    body = samples.replace(prefix, new_prefix)
    grown = len(new_prefix) - len(prefix)  # the number of replacements from the lengths: one pass less
    replaced = (len(body) - len(samples)) // grown if grown else samples.count(prefix)
    if replaced != samples.count(b"\n") - 1:
        return None  # a line of another metric, a comment, a blank line or other labels first
    for old, replacement in rename.labels[1:]:
        body = body.replace(b"," + old, b"," + replacement)
    head = rename.help_line or b"# HELP " + new + text[start + len(HELP) + len(name) : help_end + 1]
    head += TYPE + new + text[help_end + 1 + len(TYPE) + len(name) : type_end]  # its newline: in samples
    return new, [head, body]


class Rewriter:
    """The rewrite fed as haproxy's answer arrives: each complete family is rewritten at once, so the
    work overlaps haproxy's own, and ``out`` grows family by family.

    The agent's own families (``add``) go after the samples of the family of the same name, or at
    the end when haproxy has none; when they come late, they are put into the families already
    rewritten, so nothing of ``out`` may be sent before ``add``.
    """

    def __init__(self, out: list[bytes] | None = None) -> None:
        self.out: list[bytes] = [] if out is None else out
        self._parts: list[bytes | memoryview] = []  # the text after the last complete family
        self._added: dict[bytes, Family] | None = None  # the agent's families not placed yet
        self._ends: dict[bytes, int] = {}  # before ``add``: where each family's first run ends
        self._last = b""

    @property
    def placed(self) -> bool:
        """Whether the agent's families are known (``out`` may be sent as it is)."""
        return self._added is not None

    def add(self, families: Sequence[Family]) -> None:
        """The agent's families, once: placed at the families rewritten so far and at those to come."""
        self._added = {family.name.encode(): family for family in families}
        for name, end in sorted(self._ends.items(), key=lambda item: item[1], reverse=True):
            family = self._added.pop(name, None)
            if family is not None:
                self.out.insert(end, family.body().encode())
        self._ends.clear()

    def feed(self, data: bytes) -> None:
        """More of haproxy's text; every family followed by a ``# HELP`` line in ``data`` is rewritten."""
        cut = data.rfind(NEXT_HELP)
        if cut < 0:
            self._parts.append(data)
            return
        if self._parts:
            text = b"".join([*self._parts, memoryview(data)[: cut + 1]])
            self._rewrite(text, len(text))
        else:
            self._rewrite(data, cut + 1)
        self._parts = [memoryview(data)[cut + 1 :]]

    def finish(self) -> list[bytes]:
        """The rest of the text rewritten, the agent's families placed: the whole answer."""
        text = b"".join(self._parts)
        self._parts = []
        if text and not text.endswith(b"\n"):
            text += b"\n"
        self._rewrite(text, len(text))
        if self._last:
            self._run_ended(self._last)
            self._last = b""
        if self._added is None:
            self.add([])
        assert self._added is not None
        self.out.extend(family.text().encode() for family in self._added.values())
        self._added = {}
        return self.out

    def _run_ended(self, name: bytes) -> None:
        if self._added is None:
            self._ends.setdefault(name, len(self.out))
        elif (family := self._added.pop(name, None)) is not None:
            self.out.append(family.body().encode())

    def _rewrite(self, text: bytes, end: int) -> None:
        """Rewrite the families in ``text[:end]``."""
        start = 0
        while start < end:
            cut = text.find(NEXT_HELP, start + 1, end)
            stop = end if cut < 0 else cut + 1
            family = _family(text, start, stop) if text.startswith(HELP, start) else None
            parts = [family] if family is not None else [(n, [line]) for n, line in _lines(text[start:stop])]
            for name, pieces in parts:
                if name and name != self._last:
                    if self._last:
                        self._run_ended(self._last)
                    self._last = name
                self.out.extend(pieces)
            start = stop


def rewrite(haproxy: bytes, added: Sequence[Family] = ()) -> list[bytes]:
    """haproxy's exporter text as the proxy rewrites it, with ``added`` families merged in (pieces)."""
    rewriter = Rewriter()
    rewriter.add(added)
    rewriter.feed(haproxy)
    return rewriter.finish()


def gauges(cpu: float, memory: float) -> bytes:
    """The two amphora gauges, the first lines of every answer."""
    return "".join(family.text() for family in amphora_families(cpu, memory)).encode()


def scrape_body(haproxy: bytes, cpu: float, memory: float, added: Sequence[Family] = ()) -> list[bytes]:
    """The whole answer in pieces: the amphora gauges, haproxy's families and the agent's own."""
    return [gauges(cpu, memory), *rewrite(haproxy, added)]

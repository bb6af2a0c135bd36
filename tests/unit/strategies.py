"""Hypothesis strategies shared by the property tests: ids, addresses, and config-like text."""

from __future__ import annotations

import string

from hypothesis import strategies as st

uuids = st.uuids().map(str)
words = st.text(string.ascii_letters + string.digits + "_-.:/[]@", min_size=1, max_size=12)
any_text = st.text(max_size=400)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=1, max_value=65535)


def lines_of(tokens: st.SearchStrategy[str], max_lines: int = 25) -> st.SearchStrategy[str]:
    """Text made of lines of the given tokens, indented or not: near enough to a config to go deep."""
    line = st.tuples(st.sampled_from(["", "    "]), st.lists(tokens, min_size=0, max_size=5))
    return st.lists(line, max_size=max_lines).map(
        lambda ls: "\n".join(indent + " ".join(parts) for indent, parts in ls)
    )

"""amphora-agent: a drop-in re-implementation of the Octavia HAProxy amphora agent."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__``, looked up on first use: importing importlib.metadata costs ~40 ms at start-up."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("amphora-agent")
    except PackageNotFoundError:  # running from a source tree that was not installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found

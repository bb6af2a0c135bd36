"""amphora-agent: a drop-in re-implementation of the Octavia HAProxy amphora agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("amphora-agent")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

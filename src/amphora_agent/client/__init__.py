"""The typed client of the amphora agent API: ``AgentClient(Connection(url, amphora_id, ca, cert))``.

Names are imported on first use, so ``amphora_agent.client.models`` alone does not pull in httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amphora_agent.client.core import AgentClient
    from amphora_agent.client.models import Listener, PlugNetwork, PlugVip, Reply, Rule
    from amphora_agent.client.transport import (
        AgentAPIError,
        AgentUnreachable,
        ClientError,
        Connection,
        RetryPolicy,
    )

_WHERE = {
    "AgentAPIError": "transport",
    "AgentClient": "core",
    "AgentUnreachable": "transport",
    "ClientError": "transport",
    "Connection": "transport",
    "RetryPolicy": "transport",
    "Listener": "models",
    "PlugNetwork": "models",
    "PlugVip": "models",
    "Reply": "models",
    "Rule": "models",
}
__all__ = [
    "AgentAPIError",
    "AgentClient",
    "AgentUnreachable",
    "ClientError",
    "Connection",
    "Listener",
    "PlugNetwork",
    "PlugVip",
    "Reply",
    "RetryPolicy",
    "Rule",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` when it is first asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

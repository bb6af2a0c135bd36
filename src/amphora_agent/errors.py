"""Domain errors. Services raise them; api.py maps each class to one HTTP status, once."""

from __future__ import annotations


class AgentError(Exception):
    """An error with the ``message`` and ``details`` the controller reads from the JSON body."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message if details is None else f"{message}: {details}")
        self.message = message
        self.details = details


class InvalidInput(AgentError):
    """The request is malformed: a bad id, name, action, body or config (400)."""


class ConfigRejected(InvalidInput):
    """haproxy (or keepalived) refused the uploaded configuration (400)."""


class NotFound(AgentError):
    """The named load balancer, listener, certificate or interface does not exist (404)."""


class Conflict(AgentError):
    """The request contradicts the current state, e.g. an interface that is already plugged (409)."""


class TooLarge(AgentError):
    """The request body is over its size limit (413)."""


class CommandFailed(AgentError):
    """A process the agent ran or drives failed (500), with its output in ``details``."""

    def __init__(
        self,
        message: str,
        details: str | None = None,
        *,
        argv: list[str] | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, details)
        self.argv = argv or []
        self.code = code


class DiskFull(CommandFailed):
    """The file system holding agent state is full: nothing was replaced (500, never a 2xx)."""


class UnsafePath(CommandFailed):
    """A path inside the agent's folders is a symbolic link or leads outside them: refused (500)."""


class Unavailable(AgentError):
    """The amphora cannot take this change now, e.g. during a topology transition (503)."""

"""``PUT /1.0/config``: replace the agent's INI file and apply the options that may change live."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from amphora_agent import preflight, settings
from amphora_agent.errors import InvalidInput
from amphora_agent.settings import LiveSettings
from amphora_agent.system import files, uploads

LOG = logging.getLogger(__name__)


class AgentConfig:
    """Writes the file the agent was started with and swaps in the new mutable values."""

    def __init__(self, live: LiveSettings) -> None:
        self._live = live
        self._lock = threading.Lock()  # the file written and the settings applied come from one upload

    @property
    def target(self) -> uploads.Destination:
        """Where an uploaded file goes: the file the agent was started with (or a scratch folder)."""
        scratch = Path(tempfile.gettempdir()) / "amphora-agent.conf"  # an agent started without a file
        return uploads.Destination(self._live.current.config_file or scratch)

    def put(self, upload: uploads.Upload) -> list[str]:
        """Parse and check first (a file the agent could not start with changes nothing), then write
        and apply; return the options that take effect at the next start."""
        with upload.contents() as body:
            if not body.strip():  # would silently drop the heartbeat key and targets
                raise InvalidInput("Invalid configuration file", "the file is empty")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput("Invalid configuration file", str(exc)) from exc
        with self._lock:
            current = self._live.current
            new = settings.parse_ini(text, current.config_file)
            problems = preflight.problems(new)
            if problems:  # the agent could not start with this file: keep the one it can start with
                raise InvalidInput("Invalid configuration file", "; ".join(problems))
            if current.config_file is not None:
                uploads.place(upload, current.config_file, files.PRIVATE)
            applied, ignored = settings.mutable_update(current, new)
            for name in ignored:
                LOG.info("option %s changed in the file; it takes effect after a restart", name)
            self._live.replace(applied)
        return ignored

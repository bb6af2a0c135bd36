"""The agent's own logging: set up at start, and changed live by ``PUT /1.0/config``.

Live: ``debug`` (the root level) and ``log_config_append`` (a ``logging.config.fileConfig`` file:
applied when it is set or changes; when it is unset, the default set-up comes back). ``use_syslog``
and ``syslog_log_facility`` take effect at the next start (docs/configuration.md).
"""

from __future__ import annotations

import logging
import logging.config
import logging.handlers
import sys
import threading
from pathlib import Path

from amphora_agent.settings import Settings

LOG = logging.getLogger(__name__)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _default(settings: Settings) -> None:
    """stderr at INFO (DEBUG with ``debug``), and syslog when configured."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if settings.debug else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    if settings.use_syslog and Path("/dev/log").exists():
        facility = settings.syslog_log_facility.lower().removeprefix("log_")
        code = logging.handlers.SysLogHandler.facility_names.get(facility, 1 << 3)
        root.addHandler(logging.handlers.SysLogHandler("/dev/log", code))


class LogSetup:
    """Applies the logging options at start and follows their live changes."""

    def __init__(self, settings: Settings) -> None:
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._debug = settings.debug
        self._apply_file(settings)

    def _apply_file(self, settings: Settings) -> None:
        path = settings.log_config_append
        if path is not None and path.is_file():
            logging.config.fileConfig(path, disable_existing_loggers=False)
            if settings.debug:
                logging.getLogger().setLevel(logging.DEBUG)
            self._file = path
        else:
            _default(settings)
            self._file = None

    def follow(self, settings: Settings) -> None:
        """New settings are in force: apply a changed logging file, or a changed ``debug``."""
        with self._lock:
            if settings.log_config_append != self._file:
                try:
                    self._apply_file(settings)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:  # checked before, but a race
                    _default(settings)
                    self._file = None
                    LOG.error(
                        "logging configuration %s failed, default logging instead: %s",
                        settings.log_config_append,
                        exc,
                    )
                else:
                    LOG.info("logging configuration now %s", self._file or "the default (stderr)")
            elif settings.debug != self._debug:
                logging.getLogger().setLevel(logging.DEBUG if settings.debug else logging.INFO)
            self._debug = settings.debug

"""What gunicorn.conf.py installs in gunicorn: typed settings from the environment, and JSON log lines
(the format of src/logs.py, which the application uses too).

gunicorn.conf.py keeps the settings and the hooks; the classes live here, where they are linted, tested and
importable. Nothing here imports prometheus_client: the master imports this module before its on_starting hook
has chosen PROMETHEUS_MULTIPROC_DIR (see create_app).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gunicorn import glogging

from .config import ConfigError, EnvReader
from .logs import JsonFormatter, StdoutLineHandler


class GunicornEnv:
    """gunicorn settings from the environment: the application's parser, a bad value exits with one line."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._reader = EnvReader(environ)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        """An integer setting of at least ``minimum``."""
        try:
            return self._reader.number(name, int, default, minimum=minimum)
        except ConfigError as exc:
            raise SystemExit(f"Invalid configuration: {exc}") from None

    def flag(self, name: str, default: bool) -> bool:
        """A true/false setting."""
        try:
            return self._reader.flag(name, default=default)
        except ConfigError as exc:
            raise SystemExit(f"Invalid configuration: {exc}") from None

    def text(self, name: str, default: str) -> str:
        """A text setting; empty counts as unset."""
        return self._reader.text(name) or default


class JsonLogger(glogging.Logger):
    """gunicorn's logger with its error log as JSON lines on stdout."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if cfg.errorlog == "-":
            for handler in [h for h in self.error_log.handlers if getattr(h, "_gunicorn", False)]:
                self.error_log.removeHandler(handler)
            handler = StdoutLineHandler()
            handler._gunicorn = True  # type: ignore[attr-defined] # lets gunicorn's next setup() (on reload) replace it
            self.error_log.addHandler(handler)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
        # Records logged before the application installs its own JSON handler (imports, configuration
        # errors) go through the root logger: give it the same format so that no plain line escapes.
        root = logging.getLogger()
        if not any(getattr(h, "_flask_api_json", False) for h in root.handlers):
            root_handler = StdoutLineHandler()
            root_handler.setFormatter(JsonFormatter())
            root_handler._flask_api_json = True  # type: ignore[attr-defined]
            root.addHandler(root_handler)
        root.setLevel(self.loglevel)

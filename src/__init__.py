"""flask-api: registration, password authentication and JWT-protected routes.

``create_app()`` builds the application; gunicorn loads ``src:application`` and ``flask --app src run`` finds
the same object. ``application`` is built on first access rather than at import, so that importing a module of
this package (tests, ``python -m src.migrate``) never reads the environment nor creates files.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from flask import Flask

from . import cli, errors, routes, security
from .config import ConfigError, Settings, load_env_file
from .flask_app import App
from .routes import health
from .routes.waits import place_routes
from .storage import store_from_settings

__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]
__version__ = "1.0.0"

# gunicorn stops the whole server (instead of restarting workers forever) when a worker exits with this code.
APP_LOAD_ERROR_EXIT_CODE = 4


def load_settings() -> Settings:
    """Settings from the environment, plus ``.env`` in the working directory when present.

    Raises ConfigError naming the first bad variable; gunicorn's master can call it to fail before forking.
    """
    load_env_file()
    return Settings.from_env(os.environ)


def _settings(config: Settings | Mapping[str, str] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    if config is not None:
        return Settings.from_env(config)
    return load_settings()


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the application.

    ``config`` is a ``Settings``, or a mapping read instead of the environment (tests), or None: the
    environment, plus ``.env`` in the working directory when present. Raises ConfigError on a bad setting.
    """
    settings = _settings(config)
    app = App(__name__, static_folder=None)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_content_length)
    app.json.sort_keys = False  # type: ignore[attr-defined] # keep the documented field order, and skip the sort on every response

    store = store_from_settings(settings)
    app.extensions["user_store"] = store
    errors.init_app(app)
    if settings.trusted_proxy_count:
        app.wsgi_app = security.TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, settings.trusted_proxies, settings.trusted_proxy_count
        )
    # Imported here, not at the top: gunicorn.conf.py imports this package in the master before its
    # on_starting hook has chosen PROMETHEUS_MULTIPROC_DIR, and prometheus_client picks its storage for good
    # when it is first imported. Workers import it after that, in create_app.
    from . import observability  # noqa: PLC0415

    health.answer_liveness_first(app, observability.ROUTE_ENVIRON)
    if settings.otel_traces_enabled:
        # Imported only when on: with tracing off, no OpenTelemetry module loads and no middleware runs.
        from . import tracing  # noqa: PLC0415

        tracing.init_app(app, settings)  # inside the access-log middleware, which logs the trace id
    observability.init_app(app)
    security.init_app(app, settings, store)
    routes.init_app(app)
    cli.init_app(app)
    place_routes(app)  # last: every route, /metrics included, is registered
    return app


def _application() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        message = f"Invalid configuration: {exc}"
        if logging.getLogger().handlers:
            logging.getLogger(__name__).critical("%s", message)
        else:
            print(message, file=sys.stderr)
        raise SystemExit(APP_LOAD_ERROR_EXIT_CODE) from None


def __getattr__(name: str) -> Flask:
    if name == "application":
        app = globals()["application"] = _application()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

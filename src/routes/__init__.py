"""HTTP routes, one blueprint per feature."""

from flask import Flask

from . import auth, docs, health, openapi, sessions, users


def init_app(app: Flask) -> None:
    """Register every blueprint (/docs only when API_DOCS_ENABLED)."""
    for module in (auth, sessions, users, health, openapi):
        app.register_blueprint(module.bp)
    if app.config["SETTINGS"].api_docs_enabled:
        app.register_blueprint(docs.bp)

"""HTTP routes, one blueprint per feature."""

from flask import Flask

from . import auth, health, openapi, sessions, users


def init_app(app: Flask) -> None:
    """Register every blueprint."""
    for module in (auth, sessions, users, health, openapi):
        app.register_blueprint(module.bp)

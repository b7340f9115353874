"""The smallest app doing what the service's fast routes do: the yardstick of the benchmark.

Flask + flask-jwt-extended, ``/healthz`` returning JSON and ``/hello`` verifying a token against an in-memory
dict. Served by ``bench/run.py`` under the project's own ``gunicorn.conf.py`` with the module swapped
(``bench.reference_app:application``). The JWT key comes from ``BENCH_REFERENCE_JWT_SECRET``, set by the
bench; ``application`` is built on first access, so importing this module needs no environment.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required

USERS = {"alice": {"id": 1, "username": "alice"}}


def create_app(jwt_secret: str) -> Flask:
    """Build the reference app with the given HS256 key."""
    app = Flask(__name__)
    app.config["JWT_SECRET_KEY"] = jwt_secret
    JWTManager(app)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/hello")
    @jwt_required()
    def hello():
        user = USERS[get_jwt_identity()]
        return jsonify(message=f"Hello {user['username'].capitalize()}")

    return app


def __getattr__(name: str) -> Flask:
    if name == "application":
        app = globals()["application"] = create_app(os.environ["BENCH_REFERENCE_JWT_SECRET"])
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

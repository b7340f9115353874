"""Liveness and readiness probes (never rate limited, never authenticated)."""

import logging
from typing import Any

from flask import Blueprint, Flask, current_app

from ..apidoc import ok, operation
from ..errors import ServiceUnavailable
from ..lifecycle import is_draining
from ..schemas import Status
from ..storage import StoreUnavailable
from .waits import reads_store, waits_on_nothing

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

# The one public answer of a failed readiness check: the reason (a path, a database error) is for the log,
# which carries the request id, not for whoever can reach the port.
NOT_READY = "The service is not ready to serve requests."
LIVE = {"status": "ok"}


class Liveness:
    """WSGI middleware: ``GET /healthz`` answered at once, without Flask's request machinery.

    The answer is the one Flask's route gives (made by Flask's own JSON provider at startup), and it passes
    through the same middlewares: request id, access line, metrics under the route ``/healthz``, security
    headers. The probe is the most frequent request a pod gets and the one that must stay quick when
    the pod is busy: skipping the request and response objects, URL matching and context push halves its
    cost (docs/performance.md, "Where the time goes"). Any other method, and any
    request with an ``Origin`` (which the CORS extension must see), goes on to Flask.
    """

    def __init__(self, wsgi_app: Any, route_key: str, body: bytes, content_type: str) -> None:
        self.wsgi_app = wsgi_app
        self.route_key = route_key
        self.body = body
        self.headers = (("Content-Type", content_type), ("Content-Length", str(len(body))))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ["REQUEST_METHOD"]
        if environ["PATH_INFO"] != "/healthz" or method not in _LIVENESS_METHODS or "HTTP_ORIGIN" in environ:
            return self.wsgi_app(environ, start_response)
        environ[self.route_key] = "/healthz"
        start_response("200 OK", list(self.headers))
        return [self.body] if method == "GET" else []


_LIVENESS_METHODS = frozenset({"GET", "HEAD"})


def answer_liveness_first(app: Flask, route_key: str) -> None:
    """Put ``Liveness`` in front of Flask (inside the middlewares installed after it)."""
    with app.app_context():
        response = app.json.response(LIVE)
    body = response.get_data()  # type: ignore[attr-defined] # a flask.Response, typed as its sans-io base
    live = Liveness(app.wsgi_app, route_key, body, response.content_type)
    app.wsgi_app = live  # type: ignore[method-assign]


@bp.get("/healthz")
@waits_on_nothing
@operation(
    "healthz",
    "health",
    "Liveness: the process serves; touches no storage",
    {200: ok("The process serves.", Status)},
)
def healthz():
    """Liveness: the process answers. Touches no storage, so a database outage never restarts pods."""
    return LIVE


@bp.get("/readyz")
@reads_store
@operation(
    "readyz",
    "health",
    "Readiness: the store is usable and the process is not draining",
    {200: ok("Ready for traffic.", Status), 503: None},
)
def readyz():
    """Readiness: 200 only when the store is usable and the process is not shutting down."""
    if is_draining():
        log.info("not ready: the process is shutting down")
        raise ServiceUnavailable(NOT_READY)
    try:
        current_app.extensions["user_store"].check_ready()
    except StoreUnavailable as exc:
        log.warning("not ready: %s", exc)
        raise ServiceUnavailable(NOT_READY) from exc
    return {"status": "ready"}

"""Liveness and readiness probes (never rate limited, never authenticated)."""

import logging

from flask import Blueprint, current_app

from ..errors import ServiceUnavailable
from ..lifecycle import is_draining
from ..storage import StoreUnavailable

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

# The one public answer of a failed readiness check: the reason (a path, a database error) is for the log,
# which carries the request id, not for whoever can reach the port.
NOT_READY = "The service is not ready to serve requests."


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers. Touches no storage, so a database outage never restarts pods."""
    return {"status": "ok"}


@bp.get("/readyz")
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

"""Liveness and readiness probes (never rate limited, never authenticated)."""

from flask import Blueprint, current_app

from ..errors import ServiceUnavailable
from ..lifecycle import is_draining
from ..storage import StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers. Touches no storage, so a database outage never restarts pods."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Readiness: 200 only when the store is usable and the process is not shutting down."""
    if is_draining():
        raise ServiceUnavailable("The process is shutting down.")
    try:
        current_app.extensions["user_store"].check_ready()
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The user store is not ready: {exc}") from exc
    return {"status": "ready"}

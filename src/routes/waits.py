"""Where the worker (src/worker.py) runs each route: on its event loop, or on its thread pool.

A route marked ``waits_on_nothing`` or ``reads_store`` runs on the loop (a read that must query PostgreSQL is
moved to the pool as it starts: ``WouldWait`` in src/lifecycle.py); an unmarked route (password hashing,
synced writes) runs on the thread pool. The worker decides from the rule a request matches, as Flask
matches it, so every spelling of a path (``//authenticate``, ``/health%7A``) lands where its route does.
"""

from collections.abc import Callable
from typing import Any

from flask import Flask

from ..worker import LOOP_ENDPOINTS

_WAITS_ON = "flask_api_waits_on"


def waits_on_nothing(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route that answers from the process's memory alone."""
    setattr(view, _WAITS_ON, "nothing")
    return view


def reads_store(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route whose only wait is a read of the store."""
    setattr(view, _WAITS_ON, "store")
    return view


def loop_endpoints(app: Flask) -> frozenset[str]:
    """The endpoints the worker runs on its event loop: the marked ones."""
    return frozenset(
        endpoint
        for endpoint, view in app.view_functions.items()
        if getattr(view, _WAITS_ON, None) in ("nothing", "store")
    )


def place_routes(app: Flask) -> None:
    """Leave the loop's endpoints where the worker looks for them (after every route is registered)."""
    app.extensions[LOOP_ENDPOINTS] = loop_endpoints(app)

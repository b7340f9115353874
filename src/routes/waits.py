"""Where the worker (src/worker.py) runs each route: on its event loop, or on its thread pool.

A route marked ``waits_on_nothing`` or ``reads_store`` runs on the loop (a read that must query PostgreSQL is
moved to the pool as it starts: ``WouldWait`` in src/lifecycle.py); an unmarked route (password hashing,
synced writes) runs on the thread pool.
"""

from collections.abc import Callable
from typing import Any

from flask import Flask

from ..worker import OFFLOADED_ROUTES

_WAITS_ON = "flask_api_waits_on"


def waits_on_nothing(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route that answers from the process's memory alone."""
    setattr(view, _WAITS_ON, "nothing")
    return view


def reads_store(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route whose only wait is a read of the store."""
    setattr(view, _WAITS_ON, "store")
    return view


def offloaded_routes(app: Flask) -> frozenset[tuple[str, str]]:
    """The (method, path) pairs the worker runs on its thread pool."""
    offloaded = set()
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], _WAITS_ON, None) in ("nothing", "store"):
            continue
        # Flask answers an automatic OPTIONS itself, without the view.
        skipped = {"OPTIONS"} if rule.provide_automatic_options else set()
        offloaded.update((method, rule.rule) for method in (rule.methods or set()) - skipped)
    return frozenset(offloaded)


def place_routes(app: Flask) -> None:
    """Leave the offloaded routes where the worker looks for them (after every route is registered)."""
    app.extensions[OFFLOADED_ROUTES] = offloaded_routes(app)

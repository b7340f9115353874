"""Process lifecycle shared by the web routes and the gunicorn hooks.

A worker that has been told to stop (SIGTERM from the gunicorn master, itself signalled by Kubernetes)
starts draining: it finishes what it has accepted, and /readyz answers 503 so that nothing new is routed
to it.
"""

import threading

_draining = threading.Event()


def start_draining() -> None:
    """Mark this process as shutting down; readiness fails from now on."""
    _draining.set()


def is_draining() -> bool:
    """True once this process has started shutting down."""
    return _draining.is_set()

"""Process lifecycle shared by the web routes, the stores and the gunicorn worker.

A worker that has been told to stop (SIGTERM from the gunicorn master, itself signalled by Kubernetes)
starts draining: it finishes what it has accepted, and /readyz answers 503 so that nothing new is routed
to it.

A request the worker runs on its event loop (src/worker.py) must not wait: a store about to send a database
query, parse a whole JSON file or take a file lock there raises ``WouldWait`` instead, before any side
effect, and the worker runs the request again on its thread pool.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_draining = threading.Event()


def start_draining() -> None:
    """Mark this process as shutting down; readiness fails from now on."""
    _draining.set()


def is_draining() -> bool:
    """True once this process has started shutting down."""
    return _draining.is_set()


class WouldWait(BaseException):
    """A store would wait (a database query, a whole-file parse, a file lock) while the request runs on the
    event loop.

    A BaseException, so that no error handler (``except Exception``, Flask's handlers) turns it into an
    answer: it reaches the worker, which runs the request again on its thread pool.
    """


_event_loop = threading.local()


@contextmanager
def on_event_loop() -> Iterator[None]:
    """The request runs on the worker's event loop: a store must not wait (``must_not_wait``)."""
    _event_loop.active = True
    try:
        yield
    finally:
        _event_loop.active = False


def must_not_wait() -> None:
    """Raise WouldWait when the calling request runs on the event loop: called before each database query,
    whole-file parse or file lock."""
    if getattr(_event_loop, "active", False):
        raise WouldWait

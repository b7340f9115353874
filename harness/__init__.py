"""Real servers for tests, benchmark and CI gates: PostgreSQL (postgres.py), gunicorn (gunicorn.py).

The test suite loads both as pytest plugins (``-p harness.postgres -p harness.gunicorn``, pyproject.toml).
"""

import os
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def in_ci() -> bool:
    """True when the environment says CI=true, where a skipped test counts as a failure."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

"""Real servers for tests, benchmark and CI gates: PostgreSQL (postgres.py), gunicorn (gunicorn.py).

The test suite loads both as pytest plugins (``-p harness.postgres -p harness.gunicorn``, pyproject.toml).
"""

import os
import socket
import time
from collections.abc import Callable

# OWASP's minimum argon2id cost keeps test servers fast; production defaults are argon2-cffi's.
FAST_ARGON2 = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}
# Settings a test server takes from its test alone, never from the shell that runs the suite (None: unset).
UNSET = dict.fromkeys(
    (
        "DATABASE_URL",
        "SECRET_KEY",
        "SECRET_KEY_PREVIOUS",
        "METRICS_PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "CORS_ORIGINS",
    )
)


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

"""Real servers for the tests and the benchmark: PostgreSQL (postgres.py) and gunicorn (gunicorn.py)."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

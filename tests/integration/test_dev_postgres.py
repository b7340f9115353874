"""``make dev-postgres`` (tools/dev_postgres.py): a local PostgreSQL that prints its URL, is migrated, keeps
its data across runs and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness import free_port
from harness.postgres import require_postgres_binaries

REPO = Path(__file__).resolve().parents[2]
URL_PREFIX = "DATABASE_URL="
READY = "dev-postgres: migrate: schema is up to date"


def start(data: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """Start the tool; (its process, the DATABASE_URL it printed) once it says the schema is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.dev_postgres", "--data", str(data), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, seen = None, []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(URL_PREFIX):
                url = line.removeprefix(URL_PREFIX).strip()
            if line.startswith(READY):
                return process, url
    process.kill()
    process.communicate(timeout=60)
    pytest.fail(f"dev-postgres did not get ready: {''.join(seen)}")


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return process.returncode, output


@pytest.fixture
def data() -> Iterator[Path]:
    """A data folder under /tmp itself: as root the server runs as the postgres user, which cannot enter
    pytest's tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="dev-postgres-test-"))
    folder.chmod(0o755)  # as a developer's checkout is
    yield folder / "pg"
    shutil.rmtree(folder, ignore_errors=True)


def test_dev_postgres_prints_a_url_that_connects_keeps_its_data_and_stops_on_sigterm(data):
    require_postgres_binaries()
    port = free_port()
    process, url = start(data, port)
    try:
        assert url == f"postgresql://postgres@127.0.0.1:{port}/flask_api"
        with psycopg.connect(url, connect_timeout=10) as conn:
            tables = {
                row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
            assert {"users", "sessions", "refresh_tokens", "login_failures"} <= tables
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
    finally:
        code, output = stop(process)
    assert code == 0, output
    assert output.strip().endswith("dev-postgres: stopped")
    assert not (data / "data" / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    process, url = start(data, port)  # the same folder again: the data is still there
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]
    finally:
        code, output = stop(process)
    assert code == 0, output


def test_a_port_in_use_is_refused_in_one_line(tmp_path):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = subprocess.run(
            [sys.executable, "-m", "tools.dev_postgres", "--data", str(tmp_path / "pg"), "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert (
        result.stdout
        == f"dev-postgres: port {port} is in use: pass another one (make dev-postgres PG_PORT=...)\n"
    )
    assert not (tmp_path / "pg").exists()
    assert os.listdir(tmp_path) == []

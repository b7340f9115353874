"""Drill: the database password of the application's role is rotated while a real ``gunicorn`` serves.

The role authenticates with a password (scram-sha-256, not the harness's trust), the service reads it from
DATABASE_PASSWORD_FILE, and the rotation goes the way a rotation does on RDS with a synced Secret volume: the
database gets the new password first, the file follows (an atomic rename, as the kubelet swaps a Secret
volume), then the server ends every session of the role, as the pool's connection lifetime or a failover
would. The service must answer every request without a 5xx and reconnect with the new password, with the same
master and workers (no restart). The same drill with the password inside DATABASE_URL shows what it prevents.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql

from harness import wait_until
from harness.gunicorn import GunicornServer
from harness.postgres import PostgresServer, new_server, require_postgres_binaries
from src import migrate

APP_ROLE = "flask_api_app"
USER_PASSWORD = "drill password 1"


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    """A server of its own whose pg_hba asks the application's role for its password."""
    require_postgres_binaries()
    server = new_server()
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text(f"host all {APP_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.destroy()


@pytest.fixture
def app_database(database: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL of the app role without a password, its password file), migrated as the init container does."""
    name = f"rotation_{secrets.token_hex(6)}"
    admin_url = database.create_database(name)
    app_url = f"postgresql://{APP_ROLE}@127.0.0.1:{database.port}/{name}"
    password_file = tmp_path / "secrets" / "password"
    password_file.parent.mkdir()
    password_file.write_text(secrets.token_hex(24))
    code, line = migrate.migrate(
        {
            "DATABASE_URL": admin_url,
            "DATABASE_APP_URL": app_url,
            "DATABASE_APP_PASSWORD_FILE": str(password_file),
        }
    )
    assert code == 0, line
    yield app_url, password_file
    database.drop_database(name)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(APP_ROLE)))


def service_env(**overrides: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "SECRET_KEY": secrets.token_hex(32),
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        "AUTH_MAX_FAILURES": "0",
        # The traffic registers from one address in a loop: neither the per-address registration budget nor
        # the bound on concurrent hashes is under test here.
        "REGISTER_MAX_PER_ADDRESS": "0",
        "ARGON2_CONCURRENCY": "64",
        "DATABASE_POOL_MIN": "2",
        "DATABASE_PASSWORD_FILE": None,
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    env.update(overrides)
    return env


class Traffic:
    """Threads alternating /readyz and /register in a bounded loop; counts statuses and no-answers."""

    def __init__(self, url: str, threads: int = 3, max_per_thread: int = 3000) -> None:
        self.url = url
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while paused
        self._go.set()
        self._in_flight = 0
        self._threads = [
            threading.Thread(target=self._run, args=(index, max_per_thread), daemon=True)
            for index in range(threads)
        ]

    def _begin(self) -> bool:
        """Count one more request in flight once not paused; False when stopping."""
        while not self._stop.is_set():
            with self._lock:
                if self._go.is_set():
                    self._in_flight += 1
                    return True
            self._go.wait(timeout=1)
        return False

    def _run(self, index: int, max_per_thread: int) -> None:
        for number in range(max_per_thread):
            if not self._begin():
                return
            try:
                if number % 2:
                    response = requests.get(f"{self.url}/readyz", timeout=15)
                else:
                    body = {"username": f"rotation-{index}-{number}", "password": USER_PASSWORD}
                    response = requests.post(f"{self.url}/register", json=body, timeout=15)
            except requests.RequestException as error:
                with self._lock:
                    self.errors.append(type(error).__name__)
                continue
            else:
                with self._lock:
                    self.statuses[response.status_code] += 1
            finally:
                with self._lock:
                    self._in_flight -= 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No request in flight inside the block; the traffic resumes after it."""
        with self._lock:
            self._go.clear()
        try:
            wait_until(lambda: self._in_flight == 0, 60, what="the requests in flight to end")
            yield
        finally:
            self._go.set()

    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def wait_for_more(self, more: int, timeout: float = 60) -> None:
        target = self.answered() + more
        wait_until(lambda: self.answered() >= target, timeout, what=f"{target} answered requests")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def rotate(database: PostgresServer, app_url: str, password_file: Path | None) -> str:
    """ALTER ROLE to a new password, then (when there is one) swap the file; returns the new password."""
    new_password = secrets.token_hex(24)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(new_password))
        )
    if password_file is not None:
        staged = password_file.with_name(".password.new")
        staged.write_text(new_password)
        os.replace(staged, password_file)
    return new_password


def end_sessions_of_the_role(database: PostgresServer) -> int:
    """pg_terminate_backend on every session of the application's role; how many there were."""
    with psycopg.connect(database.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,)
        ).fetchall()
    return len(rows)


def sessions_of_the_role(database: PostgresServer) -> int:
    with psycopg.connect(database.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,)).fetchone()
    return row[0]


def test_the_role_needs_its_password(database, app_database):
    app_url, password_file = app_database
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(app_url, password="not the password", connect_timeout=5).close()
    psycopg.connect(app_url, password=password_file.read_text(), connect_timeout=5).close()


def test_service_follows_a_password_rotation_without_5xx_or_restart(database, app_database):
    app_url, password_file = app_database
    env = service_env(DATABASE_URL=app_url, DATABASE_PASSWORD_FILE=str(password_file))
    with GunicornServer(env, workers=2).start(timeout=60) as server, Traffic(server.url) as traffic:
        workers = server.worker_pids()
        traffic.wait_for_more(30)
        new_password = rotate(database, app_url, password_file)
        traffic.wait_for_more(30)  # served by the sessions opened with the old password
        # The sessions opened with the old password end while no query is in flight, as when the pool
        # recycles them: a write cut in the middle is a 503 by design (tests/routes/
        # test_database_failures.py).
        with traffic.paused():
            assert end_sessions_of_the_role(database) > 0
        traffic.wait_for_more(60)
        wait_until(lambda: sessions_of_the_role(database) > 0, 15, what="the service to log in again")
        assert server.worker_pids() == workers
    assert not traffic.errors, traffic.errors[:5]
    assert set(traffic.statuses) == {200, 201}, traffic.statuses
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(app_url, password="not the password", connect_timeout=5).close()
    psycopg.connect(app_url, password=new_password, connect_timeout=5).close()


def test_a_password_inside_database_url_does_not_survive_the_rotation(database, app_database):
    app_url, password_file = app_database
    with_password = app_url.replace(f"{APP_ROLE}@", f"{APP_ROLE}:{password_file.read_text()}@")
    env = service_env(DATABASE_URL=with_password)
    with GunicornServer(env, workers=2).start(timeout=60) as server, Traffic(server.url) as traffic:
        traffic.wait_for_more(30)
        rotate(database, app_url, None)
        with traffic.paused():  # as in the drill above: only reconnecting can fail
            end_sessions_of_the_role(database)
        wait_until(lambda: traffic.statuses[503] > 0, 30, what="a 503 after the rotation")
    assert traffic.statuses[503] > 0

"""Versioned migrations (src/storage/schema.py, ``python -m src.migrate``) on a real PostgreSQL: a database of
the previous release is upgraded with its data, a fresh one reaches the latest version, a second run does
nothing, two runs at once take turns, a failed migration leaves nothing half done, and the follow-up version
rolls back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher

from src import create_app, migrate
from src.storage import Session
from src.storage.schema import SCHEMA_LOCK_ID
from tests.conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEY
from tests.storage import previous_release

REPO_ROOT = Path(__file__).resolve().parents[2]
LATEST = "0002_one_refresh_token_per_session"
TABLES = "tables users, login_failures, store_identity, sessions, refresh_tokens"


def build_previous_release_database(url: str) -> None:
    """What the release before versions left: its schema, made by its own code, with a user and sessions."""
    old = previous_release.load()
    old.create_schema(url)
    password_hash = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PASSWORD)
    with old.PostgresStore(url, min_size=1, max_size=1, timeout=5) as store:
        alice = store.create_user("alice", password_hash)
        bob = store.create_user("bob", password_hash)
        far = 10.0**12
        assert store.create_session(alice, Session("A" * 22, alice.id, 0.0, far), prune_before=0.0)
        assert store.create_session(bob, Session("B" * 22, bob.id, 0.0, far), prune_before=0.0)
    with psycopg.connect(url, autocommit=True) as conn:
        # A row of the refresh-token format before generations: one SHA-256 hash per token ever issued.
        conn.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES (%s, %s)", ("f" * 64, "A" * 22))


def version_history(url: str) -> list[tuple[str, str]]:
    """(version, what was done) in order, from yoyo's log."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT migration_id, operation FROM _yoyo_log ORDER BY created_at_utc, operation"
        ).fetchall()


def applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY 1")]


def run_migrate(url: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    environ.update(DATABASE_URL=url, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "src.migrate", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_database_of_the_previous_release_is_upgraded_with_its_users_and_sessions(postgres_url):
    build_previous_release_database(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        users_before = conn.execute("SELECT id, username, password_hash FROM users ORDER BY id").fetchall()

    code, line = migrate.migrate({"DATABASE_URL": postgres_url})

    assert (code, line) == (
        0,
        f"migrate: schema is up to date at version {LATEST} (applied now: {LATEST}; {TABLES})",
    )
    # The baseline was recognised (marked), never run again; only the follow-up ran.
    assert version_history(postgres_url) == [("0001_baseline", "mark"), (LATEST, "apply")]
    assert applied(postgres_url) == ["0001_baseline", LATEST]
    with psycopg.connect(postgres_url) as conn:
        assert (
            conn.execute("SELECT id, username, password_hash FROM users ORDER BY id").fetchall()
            == users_before
        )
        assert conn.execute("SELECT id FROM sessions ORDER BY id").fetchall() == [("A" * 22,), ("B" * 22,)]
        assert conn.execute("SELECT hash FROM refresh_tokens ORDER BY hash").fetchall() == [
            ("A" * 22 + ".1",),
            ("B" * 22 + ".1",),
        ]
    app = create_app({**FAST_ARGON2, "DATABASE_URL": postgres_url, "SECRET_KEY": TEST_SECRET_KEY})
    try:
        client = app.test_client()
        login = client.post("/authenticate", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.get_json()
        refreshed = client.post("/token/refresh", json={"refresh_token": login.get_json()["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.get_json()
        me = client.get(
            "/users/me", headers={"Authorization": f"Bearer {refreshed.get_json()['access_token']}"}
        )
        assert (me.status_code, me.get_json()["username"]) == (200, "alice")
    finally:
        app.extensions["user_store"].close()


def test_a_fresh_database_is_migrated_to_the_latest_version(postgres_url):
    code, line = migrate.migrate({"DATABASE_URL": postgres_url})

    assert (code, line) == (
        0,
        f"migrate: schema is up to date at version {LATEST} (applied now: 0001_baseline, {LATEST}; {TABLES})",
    )
    assert applied(postgres_url) == ["0001_baseline", LATEST]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sessions VALUES ('S', 1, 0, 1)")
        conn.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES ('S.1', 'S')")
        with pytest.raises(psycopg.errors.UniqueViolation):  # one refresh token per session
            conn.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES ('S.2', 'S')")


def test_migrating_twice_changes_nothing(postgres_url):
    assert migrate.migrate({"DATABASE_URL": postgres_url})[0] == 0
    history = version_history(postgres_url)

    code, line = migrate.migrate({"DATABASE_URL": postgres_url})

    assert (code, line) == (
        0,
        f"migrate: schema is up to date at version {LATEST} (applied now: none; {TABLES})",
    )
    assert version_history(postgres_url) == history


def test_two_migrations_at_once_take_turns_under_the_advisory_lock(postgres_url, tmp_path):
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        processes = [run_migrate(postgres_url, tmp_path) for _ in range(2)]
        try:
            waiting = 0
            deadline = time.monotonic() + 60
            while waiting < 2 and time.monotonic() < deadline and all(p.poll() is None for p in processes):
                waiting = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()[0]
                time.sleep(0.05)
            table_while_waiting = holder.execute("SELECT to_regclass('_yoyo_migration')").fetchone()[0]
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))
        try:
            outputs = [process.communicate(timeout=60) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        outcomes = [
            (process.returncode, out, err) for process, (out, err) in zip(processes, outputs, strict=True)
        ]

    assert (waiting, table_while_waiting) == (2, None)
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert sorted(out.partition("(applied now: ")[2].partition(";")[0] for _, out, _ in outcomes) == [
        f"0001_baseline, {LATEST}",
        "none",
    ]
    assert version_history(postgres_url) == [("0001_baseline", "apply"), (LATEST, "apply")]


def test_the_follow_up_version_rolls_back_and_forward_again(postgres_url, tmp_path):
    assert migrate.migrate({"DATABASE_URL": postgres_url})[0] == 0

    back = run_migrate(postgres_url, tmp_path, "--rollback-to", "0001_baseline")
    out, err = back.communicate(timeout=60)

    assert (back.returncode, out, err) == (
        0,
        f"migrate: schema rolled back to version 0001_baseline (undone now: {LATEST})\n",
        "",
    )
    assert applied(postgres_url) == ["0001_baseline"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the baseline's refresh_tokens again
        conn.execute("INSERT INTO sessions VALUES ('S', 1, 0, 1)")
        conn.execute("INSERT INTO refresh_tokens (hash, session_id, spent) VALUES ('x', 'S', true)")
        conn.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES ('S.1', 'S')")
    assert migrate.migrate({"DATABASE_URL": postgres_url}) == (
        0,
        f"migrate: schema is up to date at version {LATEST} (applied now: {LATEST}; {TABLES})",
    )
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT * FROM refresh_tokens").fetchall() == [("S.1", "S")]


def test_rolling_back_to_an_unknown_version_exits_2_naming_the_known_ones(postgres_url, tmp_path):
    process = run_migrate(postgres_url, tmp_path, "--rollback-to", "0009_nothing")
    out, err = process.communicate(timeout=60)

    assert (process.returncode, out) == (2, "")
    assert err == f"migrate: unknown version '0009_nothing': one of 0001_baseline, {LATEST}\n"


def test_a_failed_migration_exits_4_and_leaves_the_database_at_the_previous_version(postgres_url):
    build_previous_release_database(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # two current tokens: 0002 cannot hold
        conn.execute(
            "INSERT INTO refresh_tokens (hash, session_id) VALUES (%s, %s)", ("A" * 22 + ".7", "A" * 22)
        )

    code, line = migrate.migrate({"DATABASE_URL": postgres_url})

    assert code == 4
    assert line.startswith(f"migrate: migration {LATEST} failed: could not create unique index"), line
    assert applied(postgres_url) == ["0001_baseline"]
    with psycopg.connect(postgres_url) as conn:  # its DELETE was rolled back with the rest
        assert conn.execute("SELECT count(*) FROM refresh_tokens").fetchone() == (4,)


def test_a_lock_row_left_by_a_killed_migration_does_not_stop_the_next(postgres_url):
    # A process killed while yoyo created its bookkeeping tables leaves its row in yoyo_lock; yoyo alone would
    # wait for it, then fail, at every later run.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE yoyo_lock (locked int DEFAULT 1, ctime timestamp, pid int NOT NULL, "
            "PRIMARY KEY (locked))"
        )
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")

    code, line = migrate.migrate({"DATABASE_URL": postgres_url})

    assert (code, line) == (
        0,
        f"migrate: schema is up to date at version {LATEST} (applied now: 0001_baseline, {LATEST}; {TABLES})",
    )

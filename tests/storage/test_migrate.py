"""``python -m src.migrate``: creates the schema under the advisory lock, one line out, clear exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from harness import free_port
from harness.postgres import PostgresServer
from src import create_app, migrate
from src.storage import PostgresStore, Session
from src.storage.schema import SCHEMA_LOCK_ID
from tests.conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEY

from . import workers

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DATABASE_* variable and a working directory without .env."""
    for name in (
        "DATABASE_URL",
        "DATABASE_TIMEOUT_SECONDS",
        "DATABASE_WAIT_SECONDS",
        "DATABASE_PASSWORD_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_command(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    environ.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "src.migrate"],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_the_schema_and_prints_one_line(postgres_url, clean_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", postgres_url)

    assert migrate.main() == 0

    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "schema is up to date" in out
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_migrate_twice_is_harmless(postgres_url, clean_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres_url)

    assert migrate.main() == 0
    assert migrate.main() == 0


def test_migrate_without_database_url_exits_2_naming_the_variable(clean_env, capsys):
    assert migrate.main() == 2

    assert capsys.readouterr().err == "migrate: DATABASE_URL is not set\n"


def test_migrate_with_an_invalid_timeout_exits_2_naming_the_variable(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1/app")
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "soon")

    assert migrate.main() == 2

    assert "DATABASE_TIMEOUT_SECONDS" in capsys.readouterr().err


def test_migrate_with_an_unreachable_database_exits_1_without_the_password(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/app")
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "1")

    assert migrate.main() == 1

    err = capsys.readouterr().err
    assert err.startswith("migrate: database unavailable: ")
    assert err.count("\n") == 1
    assert "hunter2-secret" not in err


def test_migrate_reads_database_url_from_dotenv_in_the_working_directory(postgres_url, clean_env):
    (clean_env / ".env").write_text(f"DATABASE_URL={postgres_url}\n")

    assert migrate.main() == 0
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('login_failures')").fetchone() == ("login_failures",)


def test_python_dash_m_src_migrate_exits_0_on_success_and_1_when_unreachable(postgres_url, tmp_path):
    ok = run_command({"DATABASE_URL": postgres_url}, tmp_path)
    down = run_command(
        {"DATABASE_URL": f"postgresql://app@127.0.0.1:{free_port()}/app", "DATABASE_TIMEOUT_SECONDS": "1"},
        tmp_path,
    )

    assert (ok.returncode, ok.stdout.count("\n"), ok.stderr) == (0, 1, "")
    assert (down.returncode, down.stdout, down.stderr.count("\n")) == (1, "", 1)


def test_several_migrations_at_once_all_succeed(postgres_url, tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    environ.update(DATABASE_URL=postgres_url, PYTHONPATH=str(REPO_ROOT))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "src.migrate"], cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL
        )
        for _ in range(4)
    ]

    assert [process.wait(timeout=60) for process in processes] == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------------------
# Waiting for a database that is still starting (the init container of a pod started with PostgreSQL)
# ---------------------------------------------------------------------------------------------------------


def test_migrate_waits_for_a_database_that_starts_late(tmp_path):
    server = PostgresServer(tempfile.mkdtemp(prefix="flask-api-pg-"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    environ.update(
        DATABASE_URL=server.url,
        DATABASE_WAIT_SECONDS="60",
        DATABASE_TIMEOUT_SECONDS="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "src.migrate"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                first = process.stderr.readline()
                assert first.startswith("migrate: waiting for the database"), first
                server.start()
                assert process.wait(timeout=60) == 0
                assert "schema is up to date" in process.stdout.read()
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        server.destroy()


def test_migrate_gives_up_once_the_wait_is_over(clean_env, capsys):
    waited = []
    environ = {
        "DATABASE_URL": f"postgresql://app@127.0.0.1:{free_port()}/app",
        "DATABASE_WAIT_SECONDS": "4",
        "DATABASE_TIMEOUT_SECONDS": "1",
    }

    code, line = migrate.migrate(environ, sleep=waited.append)

    assert code == 1
    assert line.startswith("migrate: database unavailable: ")
    # Back-off 1 s, 2 s, then what is left of the 4 s (the failed attempts themselves take time too).
    assert waited[:2] == [1.0, 2.0]
    assert capsys.readouterr().err.count("migrate: waiting for the database") == len(waited)


def test_migrate_refuses_a_negative_wait(clean_env):
    environ = {"DATABASE_URL": "postgresql://app@127.0.0.1/app", "DATABASE_WAIT_SECONDS": "-1"}

    assert migrate.migrate(environ) == (2, "migrate: DATABASE_WAIT_SECONDS must be a number >= 0, got '-1'")


# ---------------------------------------------------------------------------------------------------------
# The application's own role: the rows of its tables, nothing else
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def app_role(postgres_url, tmp_path):
    role = f"app_{uuid.uuid4().hex[:12]}"
    app_url = postgres_url.replace("postgres@", f"{role}@", 1)
    password_file = tmp_path / "password"
    password_file.write_text("first password\n")
    yield role, app_url, password_file
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_migrate_creates_the_app_role_with_row_access_only(postgres_url, app_role, clean_env):
    role, app_url, password_file = app_role
    environ = {
        "DATABASE_URL": postgres_url,
        "DATABASE_APP_URL": app_url,
        "DATABASE_APP_PASSWORD_FILE": str(password_file),
    }

    code, line = migrate.migrate(environ)

    assert (code, line) == (
        0,
        "migrate: schema is up to date at version 0002_one_refresh_token_per_session (applied now: "
        "0001_baseline, 0002_one_refresh_token_per_session; tables users, login_failures, store_identity, "
        f"sessions, refresh_tokens, role {role} granted what the application does with them)",
    )
    with PostgresStore(app_url, min_size=1, max_size=1, timeout=5) as store:  # sessions as the app role
        user = store.create_user("s", "h")
        assert store.create_session(user, Session("S" * 22, user.id, 0.0, 10.0**12), prune_before=0.0)
        assert (
            store.rotate_refresh_token("S" * 22, 1, now=1.0, absolute=10.0**12, idle=10.0**12).generation == 2
        )
        assert store.end_session("S" * 22)
        assert store.delete_user(user.id)
    with psycopg.connect(app_url, autocommit=True) as conn:
        assert conn.execute(
            "INSERT INTO users (username, password_hash) VALUES ('a', 'h') RETURNING id"
        ).fetchone() == (2,)
        assert conn.execute("DELETE FROM users WHERE username = 'a'").rowcount == 1
        for statement in ("CREATE TABLE other (id int)", "TRUNCATE users", "DROP TABLE login_failures"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (role,)
        )
        assert row.fetchone() == (False, False, False)


def test_migrate_leaves_the_password_of_an_existing_app_role_alone(postgres_url, app_role, clean_env):
    role, app_url, password_file = app_role
    environ = {
        "DATABASE_URL": postgres_url,
        "DATABASE_APP_URL": app_url,
        "DATABASE_APP_PASSWORD_FILE": str(password_file),
    }
    assert migrate.migrate(environ)[0] == 0
    with psycopg.connect(postgres_url) as conn:
        before = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    password_file.write_text("second password\n")

    assert migrate.migrate(environ)[0] == 0

    with psycopg.connect(postgres_url) as conn:
        after = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    assert after == before


def test_migrate_wants_the_app_url_and_password_file_together(clean_env):
    environ = {"DATABASE_URL": "postgresql://app@127.0.0.1/app", "DATABASE_APP_URL": "postgresql://x@h/app"}

    assert migrate.migrate(environ) == (
        2,
        "migrate: DATABASE_APP_URL and DATABASE_APP_PASSWORD_FILE go together",
    )


def _migrate_with_app_role(postgres_url: str, app_url: str, password_file: Path) -> tuple[int, str]:
    return migrate.migrate(
        {
            "DATABASE_URL": postgres_url,
            "DATABASE_APP_URL": app_url,
            "DATABASE_APP_PASSWORD_FILE": str(password_file),
        }
    )


def test_the_whole_api_works_as_the_app_role_after_migrating(postgres_url, app_role, clean_env):
    _role, app_url, password_file = app_role
    code, line = _migrate_with_app_role(postgres_url, app_url, password_file)
    assert code == 0, line
    app = create_app(
        {
            **FAST_ARGON2,
            "DATABASE_URL": app_url,
            "DATABASE_PASSWORD_FILE": str(password_file),
            "SECRET_KEY": TEST_SECRET_KEY,
        }
    )
    try:
        client = app.test_client()
        credentials = {"username": "alice", "password": PASSWORD}
        new_password = PASSWORD + " renewed"

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert client.get("/readyz").status_code == 200
        assert client.post("/register", json=credentials).status_code == 201
        wrong = client.post("/authenticate", json={"username": "alice", "password": "not the password"})
        assert wrong.status_code == 401, wrong.get_json()
        login = client.post("/authenticate", json=credentials)
        assert login.status_code == 200, login.get_json()
        refreshed = client.post("/token/refresh", json={"refresh_token": login.get_json()["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.get_json()
        tokens = refreshed.get_json()
        me = client.get("/users/me", headers=bearer(tokens["access_token"]))
        assert (me.status_code, me.get_json()["username"]) == (200, "alice")
        assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 204
        after_logout = client.post("/token/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert after_logout.status_code == 401
        token = client.post("/authenticate", json=credentials).get_json()["access_token"]
        changed = client.put(
            "/users/me/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=bearer(token),
        )
        assert changed.status_code == 204, changed.get_json()
        login = client.post("/authenticate", json={"username": "alice", "password": new_password})
        assert login.status_code == 200, login.get_json()
        deleted = client.delete(
            "/users/me", json={"password": new_password}, headers=bearer(login.get_json()["access_token"])
        )
        assert deleted.status_code == 204, deleted.get_json()
        gone = client.post("/authenticate", json={"username": "alice", "password": new_password})
        assert gone.status_code == 401
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["user_store"].close()


def test_the_app_role_ends_its_own_listening_session_that_never_confirms_a_logout(
    postgres_url, app_role, clean_env
):
    # A logout returns once every listening session has confirmed it or been ended (pg_terminate_backend):
    # the application's own role, with no other right, must be allowed to end its stuck sessions.
    _role, app_url, password_file = app_role
    code, line = _migrate_with_app_role(postgres_url, app_url, password_file)
    assert code == 0, line
    with PostgresStore(app_url, min_size=1, max_size=1, timeout=5, password_file=str(password_file)) as store:
        user = store.create_user("alice", "h")
        assert store.create_session(user, Session("S" * 22, user.id, 0.0, 10.0**12), prune_before=0.0)
        stuck = workers.Listener(app_url, delay=None, password=password_file.read_text().strip())
        try:
            assert store.end_session("S" * 22)

            assert not stuck.alive()
        finally:
            stuck.close()


def test_migrate_grants_the_app_role_exactly_the_rights_the_application_uses(postgres_url, app_role):
    role, app_url, password_file = app_role
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what an older release granted
        migrate.create_schema(postgres_url)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON login_failures, refresh_tokens TO {}"
            ).format(sql.Identifier(role))
        )

    assert _migrate_with_app_role(postgres_url, app_url, password_file)[0] == 0

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ', ' ORDER BY privilege_type) "
            "FROM information_schema.role_table_grants WHERE grantee = %s GROUP BY table_name",
            (role,),
        ).fetchall()
    assert dict(rows) == {
        "users": "DELETE, INSERT, SELECT, UPDATE",
        "login_failures": "DELETE, INSERT, SELECT",
        "store_identity": "SELECT",
        "sessions": "DELETE, INSERT, SELECT, UPDATE",
        "refresh_tokens": "INSERT, SELECT, UPDATE",
        "_yoyo_migration": "SELECT",  # which versions are applied, read by the store at startup
    }


def test_migrate_exits_3_naming_a_table_of_the_schema_with_no_grant_decision(postgres_url, app_role):
    role, app_url, password_file = app_role
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit_log (at timestamptz)")

    code, line = _migrate_with_app_role(postgres_url, app_url, password_file)

    assert (code, line) == (
        3,
        "migrate: no entry in TABLE_PRIVILEGES (src/storage/postgres.py) for the tables audit_log",
    )
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None


def test_migrate_creates_and_grants_the_app_role_under_the_schema_lock(postgres_url, app_role):
    # Pods of a first rollout all find no role: unserialised, all but one CREATE ROLE fail ("already exists")
    # and concurrent GRANTs on one table fail too ("tuple concurrently updated").
    role, app_url, password_file = app_role
    migrate.create_schema(postgres_url)  # the schema exists: only the role's step can wait for the lock
    results = []
    waited = False
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        thread = threading.Thread(
            target=lambda: results.append(_migrate_with_app_role(postgres_url, app_url, password_file))
        )
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while thread.is_alive() and not waited and time.monotonic() < deadline:
                waited = holder.execute(
                    "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()[0]
                time.sleep(0.05)
            role_while_waiting = holder.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchone()
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))
            thread.join(timeout=60)

    assert (waited, role_while_waiting) == (True, None)
    assert [code for code, _ in results] == [0]

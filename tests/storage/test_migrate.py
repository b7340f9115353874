"""``python -m src.migrate``: creates the schema under the advisory lock, one line out, clear exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from harness import free_port
from harness.postgres import PostgresServer
from src import migrate
from src.storage import PostgresStore, Session

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
# The application's own role: rows of its two tables, nothing else
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def app_role(postgres_url, tmp_path):
    role = f"app_{uuid.uuid4().hex[:12]}"
    app_url = postgres_url.replace("postgres@", f"{role}@", 1)
    password_file = tmp_path / "password"
    password_file.write_text("first password\n")
    yield role, app_url, password_file
    with psycopg.connect(postgres_url, autocommit=True) as conn:
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
        f"migrate: schema is up to date (tables users, login_failures, sessions, refresh_tokens, "
        f"role {role} may read and write them)",
    )
    with PostgresStore(app_url, min_size=1, max_size=1, timeout=5) as store:  # sessions as the app role
        user = store.create_user("s", "h")
        assert store.create_session(user, Session("S" * 22, user.id, 0.0, 10.0**12), "h0", prune_before=0.0)
        assert (
            store.rotate_refresh_token("h0", "h1", now=1.0, absolute=10.0**12, idle=10.0**12).id == "S" * 22
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

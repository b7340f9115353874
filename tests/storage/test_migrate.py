"""``python -m src.migrate``: creates the schema under the advisory lock, one line out, clear exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from harness import free_port
from src import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DATABASE_* variable and a working directory without .env."""
    for name in ("DATABASE_URL", "DATABASE_TIMEOUT_SECONDS"):
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

"""The operator commands (``flask --app src users|sessions|config|migrate ...``) through click's runner, with
both stores: what they print, their exit codes, and what the API answers afterwards."""

from __future__ import annotations

import psycopg
import pytest

from src.storage import PostgresStore
from tests.conftest import PASSWORD, TEST_SECRET_KEY, assert_problem
from tests.storage import previous_release


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def create(runner, username: str = "alice", password: str = PASSWORD):
    return runner.invoke(args=["users", "create", username, "--password-stdin"], input=password + "\n")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------------------ users


def test_users_create_takes_the_password_from_the_prompt_and_the_user_can_sign_in(runner, auth):
    result = runner.invoke(args=["users", "create", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "created user 1 alice" in result.output
    assert PASSWORD not in result.output  # the prompt does not echo it
    assert auth.authenticate("alice", PASSWORD).status_code == 200


def test_users_create_reads_the_password_from_stdin(runner, auth):
    result = create(runner)

    assert result.exit_code == 0, result.output
    assert result.output == "created user 1 alice\n"
    assert auth.authenticate("alice", PASSWORD).status_code == 200


def test_users_create_refuses_a_short_password_and_creates_nothing(runner, auth):
    result = create(runner, password="short")

    assert result.exit_code == 1
    assert "Error: password must be 8-128 characters long" in result.output
    assert_problem(auth.authenticate("alice", "short"), 400)
    assert runner.invoke(args=["users", "list"]).output.splitlines()[1:] == []


def test_users_create_refuses_a_taken_name(runner):
    assert create(runner).exit_code == 0

    result = create(runner)

    assert result.exit_code == 1
    assert "Error: the username 'alice' is already registered" in result.output


def test_users_create_refuses_a_bad_name(runner):
    result = create(runner, username=" alice")

    assert result.exit_code == 1
    assert "Error: username must be 1-64 characters" in result.output


def test_users_list_shows_each_user_with_its_status(runner, auth):
    auth.register("alice")
    auth.register("bob")
    assert runner.invoke(args=["users", "disable", "bob"]).exit_code == 0

    result = runner.invoke(args=["users", "list"])

    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "    id  status    username",
        "     1  active    alice",
        "     2  disabled  bob",
    ]


def test_a_disabled_user_cannot_sign_in_refresh_or_use_its_tokens(runner, auth, client):
    tokens = auth.login()

    result = runner.invoke(args=["users", "disable", "alice"])

    assert result.exit_code == 0
    assert result.output == "disabled user 1 alice; its sessions have ended\n"
    assert_problem(auth.get("/hello", tokens["access_token"]), 401)
    assert_problem(auth.refresh(tokens["refresh_token"]), 401)
    assert_problem(auth.authenticate(), 401)


def test_an_enabled_user_signs_in_again(runner, auth):
    auth.login()
    assert runner.invoke(args=["users", "disable", "alice"]).exit_code == 0

    result = runner.invoke(args=["users", "enable", "alice"])

    assert result.exit_code == 0
    assert result.output == "enabled user 1 alice\n"
    token = auth.authenticate().get_json()["access_token"]
    assert auth.get("/hello", token).get_json() == {"message": "Hello Alice"}


def test_disabling_a_user_leaves_the_others_signed_in(runner, auth):
    alice = auth.token("alice")
    bob = auth.token("bob")

    assert runner.invoke(args=["users", "disable", "bob"]).exit_code == 0

    assert auth.get("/hello", alice).status_code == 200
    assert_problem(auth.get("/hello", bob), 401)


def test_a_command_on_an_unknown_user_fails(runner):
    for command in ("disable", "enable"):
        result = runner.invoke(args=["users", command, "nobody"])
        assert result.exit_code == 1
        assert result.output == "Error: no user named 'nobody'\n"


def test_users_delete_asks_first_then_removes_the_user_and_its_sessions(runner, auth):
    token = auth.token()

    kept = runner.invoke(args=["users", "delete", "alice"], input="n\n")
    assert kept.exit_code == 1
    assert auth.get("/hello", token).status_code == 200

    result = runner.invoke(args=["users", "delete", "alice", "--yes"])

    assert result.exit_code == 0
    assert result.output == "deleted user 1 alice\n"
    assert_problem(auth.get("/hello", token), 401)
    assert_problem(auth.authenticate(), 401)
    assert auth.register().status_code == 201  # the name is free again


# ------------------------------------------------------------------------------------------------ sessions


def test_sessions_revoke_ends_every_session_of_the_user_and_no_other(runner, auth):
    first = auth.login()
    second = auth.login()
    bob = auth.token("bob")

    result = runner.invoke(args=["sessions", "revoke", "alice"])

    assert result.exit_code == 0
    assert result.output == "ended 2 sessions of alice\n"
    for tokens in (first, second):
        assert_problem(auth.get("/hello", tokens["access_token"]), 401)
        assert_problem(auth.refresh(tokens["refresh_token"]), 401)
    assert auth.get("/hello", bob).status_code == 200
    assert auth.authenticate().status_code == 200  # revoking is not disabling


# ------------------------------------------------------------------------------------------------ config


def test_config_check_prints_the_settings_with_secrets_masked(runner):
    url = "postgresql://app:s3cret-db-password@db.example:5432/flask_api"
    env = {"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET_KEY, "JWT_EXPIRES_SECONDS": "900"}

    result = runner.invoke(args=["config", "check"], env=env)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "SECRET_KEY=set" in lines
    assert "DATABASE_URL=postgresql://app:***@db.example:5432/flask_api" in lines
    assert "JWT_EXPIRES_SECONDS=900" in lines
    assert TEST_SECRET_KEY not in result.output
    assert "s3cret-db-password" not in result.output


def test_config_check_exits_4_with_one_line_naming_the_bad_variable(runner):
    result = runner.invoke(args=["config", "check"], env={"JWT_EXPIRES_SECONDS": "soon"})

    assert result.exit_code == 4
    assert result.output == "Invalid configuration: JWT_EXPIRES_SECONDS must be an integer, got 'soon'\n"


# ------------------------------------------------------------------------------------------------ migrate


def test_migrate_command_creates_the_schema(runner, postgres_url):
    result = runner.invoke(args=["migrate"], env={"DATABASE_URL": postgres_url})

    assert result.exit_code == 0, result.output
    assert result.output.startswith("migrate: schema is up to date at version 0002_")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_migrate_command_rolls_back_to_a_version(runner, postgres_url):
    assert runner.invoke(args=["migrate"], env={"DATABASE_URL": postgres_url}).exit_code == 0

    result = runner.invoke(
        args=["migrate", "--rollback-to", "0001_baseline"], env={"DATABASE_URL": postgres_url}
    )

    assert (result.exit_code, result.output) == (
        0,
        "migrate: schema rolled back to version 0001_baseline "
        "(undone now: 0002_one_refresh_token_per_session)\n",
    )


def test_migrate_command_without_a_database_exits_2(runner, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)

    result = runner.invoke(args=["migrate"])

    assert result.exit_code == 2
    assert result.output == "migrate: DATABASE_URL is not set\n"


def test_a_schema_from_before_disabled_users_is_migrated(postgres_url):
    previous_release.load().create_schema(postgres_url)  # a database of a release before versions
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE users DROP COLUMN disabled")
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('alice', 'x')")

    with PostgresStore(postgres_url) as store:
        assert store.set_disabled(1, True)
        assert [(user.username, disabled) for user, disabled in store.list_users()] == [("alice", True)]

"""The operator commands as an operator runs them, ``flask --app src ...`` in a process of its own, next to a
real ``gunicorn -w 2`` on the same store (JSON file or PostgreSQL): what they change is seen by every worker
at once, and a key rotation (the key from ``keys rotate``, a restart with SECRET_KEY_PREVIOUS, then one
without it) signs nobody out until the old key is removed. Requests go to 127.0.0.1 only, in bounded
numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness.gunicorn import GunicornServer

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
PROBLEM = "application/problem+json"


@pytest.fixture
def server(store_env: dict[str, str | None], gunicorn_server) -> GunicornServer:
    return gunicorn_server(store_env, workers=2)


def flask_command(
    env: dict[str, str | None], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``flask --app src ARGS`` from the repository root, with ``env`` laid over this environment."""
    environ = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        environ.pop(name, None)
    flask = Path(sys.executable).parent / "flask"
    return subprocess.run(
        [str(flask), "--app", "src", *args],
        cwd=REPO,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 401
    assert response.headers["Content-Type"] == PROBLEM
    assert response.json()["status"] == 401


def test_a_user_disabled_by_the_command_is_refused_by_every_worker_at_once(server, store_env):
    created = flask_command(store_env, "users", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "created user 1 alice\n"
    body = {"username": "alice", "password": PASSWORD}
    tokens = requests.post(f"{server.url}/authenticate", json=body, timeout=60).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    # Every worker has checked (and remembered) the token before the command runs.
    for _ in range(8):
        assert requests.get(f"{server.url}/hello", headers=headers, timeout=30).status_code == 200

    disabled = flask_command(store_env, "users", "disable", "alice")

    assert disabled.returncode == 0, disabled.stderr
    for _ in range(8):
        assert_refused(requests.get(f"{server.url}/hello", headers=headers, timeout=30))
    refresh = {"refresh_token": tokens["refresh_token"]}
    assert_refused(requests.post(f"{server.url}/token/refresh", json=refresh, timeout=30))
    assert_refused(requests.post(f"{server.url}/authenticate", json=body, timeout=60))

    listed = flask_command(store_env, "users", "list")
    assert listed.stdout.splitlines()[1:] == ["     1  disabled  alice"]


def test_config_check_in_a_process_of_its_own_masks_secrets_and_exits_4_on_a_bad_setting(store_env):
    valid = flask_command(store_env, "config", "check")
    assert valid.returncode == 0, valid.stderr
    assert "SECRET_KEY=set" in valid.stdout.splitlines()
    assert store_env["SECRET_KEY"] not in valid.stdout + valid.stderr

    result = flask_command({**store_env, "DATABASE_POOL_MAX": "0"}, "config", "check")

    assert result.returncode == 4
    assert result.stderr == "Invalid configuration: DATABASE_POOL_MAX must be >= 1, got 0\n"
    assert result.stdout == ""


# ------------------------------------------------------------------------------------------------ keys


def hello(url: str, token: str) -> requests.Response:
    return requests.get(f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_rotation_keeps_tokens_of_the_old_key_until_the_key_is_removed(store_env, gunicorn_server):
    old_key = store_env["SECRET_KEY"]
    body = {"username": "alice", "password": PASSWORD}
    before = gunicorn_server(store_env, workers=2)
    assert requests.post(f"{before.url}/register", json=body, timeout=60).status_code == 201
    token = requests.post(f"{before.url}/authenticate", json=body, timeout=60).json()["access_token"]
    rotate = flask_command(store_env, "keys", "rotate")
    assert rotate.returncode == 0, rotate.stderr
    new_key = rotate.stdout.strip()
    before.close()

    rotated = gunicorn_server({**store_env, "SECRET_KEY": new_key, "SECRET_KEY_PREVIOUS": old_key}, workers=2)
    for _ in range(4):  # each worker
        assert hello(rotated.url, token).json() == {"message": "Hello Alice"}
    new_token = requests.post(f"{rotated.url}/authenticate", json=body, timeout=60).json()["access_token"]
    rotated.close()

    after = gunicorn_server({**store_env, "SECRET_KEY": new_key}, workers=2)
    for _ in range(4):
        assert_refused(hello(after.url, token))
        assert hello(after.url, new_token).status_code == 200

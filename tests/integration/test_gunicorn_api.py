"""The API under a real ``gunicorn -w 4``: concurrent writes, one shared key, restarts, bad configuration.

Each test that needs a store runs twice: against a JSON file in tmp_path and against a fresh PostgreSQL
database. Requests go over HTTP to 127.0.0.1 only, in bounded numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness import FAST_ARGON2, UNSET
from harness.gunicorn import REPO_ROOT, GunicornServer, gunicorn_executable
from src.storage import JsonFileStore, PostgresStore, UserStore

PASSWORD = "correct horse battery"


@pytest.fixture
def store_env(store_env: dict[str, str | None]) -> dict[str, str | None]:
    """Server environment for one store; JSON runs without SECRET_KEY, so the generated key is exercised."""
    if store_env["DATABASE_URL"] is None:
        store_env["SECRET_KEY"] = None
    # Storage under concurrency, not its limits: every registration from loopback is let through and hashed.
    return {**store_env, "REGISTER_MAX_PER_ADDRESS": "0", "ARGON2_CONCURRENCY": "64"}


def open_store(env: dict[str, str | None]) -> UserStore:
    """The store the server used, opened directly to check what it persisted."""
    if env.get("DATABASE_URL"):
        return PostgresStore(env["DATABASE_URL"], min_size=1, max_size=2, timeout=5)
    return JsonFileStore(env["DATA_FILE_PATH"])


def register(url: str, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(f"{url}/register", json={"username": username, "password": password}, timeout=60)


def authenticate(url: str, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(f"{url}/authenticate", json={"username": username, "password": password}, timeout=60)


def hello(url: str, token: str) -> requests.Response:
    return requests.get(f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_200_concurrent_registrations_are_all_persisted_with_unique_ids(gunicorn_server, store_env):
    server = gunicorn_server(store_env)
    names = [f"user-{n:03d}" for n in range(200)]

    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda name: register(server.url, name), names))

    assert [r.status_code for r in responses] == [201] * 200
    ids = {r.json()["username"]: r.json()["id"] for r in responses}
    assert sorted(ids) == names
    assert sorted(ids.values()) == list(range(1, 201))
    with open_store(store_env) as store:
        for name, user_id in ids.items():
            assert store.find_by_username(name).id == user_id
    if not store_env.get("DATABASE_URL"):
        stored = json.loads(Path(store_env["DATA_FILE_PATH"]).read_text())  # a complete, parseable file
        assert {user["username"]: user["id"] for user in stored["users"]} == ids
        assert stored["next_id"] == 201


def test_one_name_registered_by_16_clients_at_once_gives_exactly_one_201(gunicorn_server, store_env):
    server = gunicorn_server(store_env)
    barrier = threading.Barrier(16)

    def race(index: int) -> requests.Response:
        barrier.wait(timeout=30)
        return register(server.url, "contested", f"password number {index}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = sorted(response.status_code for response in pool.map(race, range(16)))

    assert statuses == [201] + [409] * 15
    with open_store(store_env) as store:
        assert store.find_by_username("contested") is not None


def test_restart_keeps_users_ids_and_tokens(gunicorn_server, store_env):
    first = gunicorn_server(store_env)
    alice_id = register(first.url, "alice").json()["id"]
    token = authenticate(first.url, "alice").json()["access_token"]
    assert first.stop() == 0

    second = gunicorn_server(store_env)

    assert hello(second.url, token).json() == {"message": "Hello Alice"}
    assert authenticate(second.url, "alice").status_code == 200
    assert register(second.url, "alice").status_code == 409
    bob = register(second.url, "bob").json()
    assert bob["id"] > alice_id


def test_all_workers_share_the_generated_key_and_log_it_once(gunicorn_server, tmp_path):
    env = {**UNSET, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}
    server = gunicorn_server(env)
    register(server.url, "alice")

    # Tokens signed by whichever worker answered must be accepted by every other worker.
    tokens = [authenticate(server.url, "alice").json()["access_token"] for _ in range(8)]
    statuses = {hello(server.url, token).status_code for token in tokens for _ in range(4)}

    assert statuses == {200}
    assert server.output().count("generated a signing key") == 1
    key_file = tmp_path / "data.json.secret_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert key_file.read_text().strip() not in server.output()


def test_failed_login_limit_is_shared_by_all_workers(gunicorn_server, store_env):
    server = gunicorn_server(store_env)
    register(server.url, "alice")

    statuses = [authenticate(server.url, "alice", "wrong password").status_code for _ in range(6)]

    assert statuses == [401] * 5 + [429]
    assert authenticate(server.url, "alice").headers["Retry-After"].isdigit()


def test_bad_configuration_stops_gunicorn_with_one_line_naming_the_variable(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env.update(
        FAST_ARGON2, DATA_FILE_PATH=str(tmp_path / "data.json"), DATABASE_URL="postgresql://127.0.0.1:1/x"
    )
    command = GunicornServer(env).command()

    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "SECRET_KEY" in line]
    # The master refuses the setting before forking: one line, no worker started, no traceback.
    assert len(lines) == 1, output
    assert lines[0].startswith("Invalid configuration: SECRET_KEY")
    assert "must be set" in lines[0]
    assert "Traceback" not in output
    assert "Booting worker" not in output
    assert gunicorn_executable() in command


def test_a_user_deleted_from_the_store_is_refused_by_every_worker_at_once(gunicorn_server, store_env):
    server = gunicorn_server(store_env)
    user_id = register(server.url, "alice").json()["id"]
    token = authenticate(server.url, "alice").json()["access_token"]
    # Enough requests for every worker to have looked alice up, and so to have her in its cache.
    assert {hello(server.url, token).status_code for _ in range(40)} == {200}

    store = open_store(store_env)
    try:
        assert store.delete_user(user_id)
    finally:
        store.close()

    statuses = [hello(server.url, token).status_code for _ in range(40)]
    assert statuses == [401] * 40

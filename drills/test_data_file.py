"""The store cannot be confused with another: truncated, deleted or replaced data, and a symlinked path.

An old token must never name a user of a store created afresh ("Hello Mallory" for alice's token), a
truncated file is corrupt (503), not empty, and /readyz tells the public nothing but that it is not ready.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from harness.gunicorn import REPO_ROOT, GunicornServer
from harness.postgres import require_postgres_binaries

from .conftest import PASSWORD, assert_problem, assert_replaced_store_refuses_old_token, register_and_login

NOT_READY = "The service is not ready to serve requests."


def hello(url: str, token: str) -> requests.Response:
    return requests.get(f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def json_server(data_file) -> GunicornServer:
    return GunicornServer(
        {"DATA_FILE_PATH": str(data_file), "LOG_LEVEL": "info", "PROMETHEUS_MULTIPROC_DIR": None}, workers=2
    )


def test_truncated_data_file_is_corrupt_and_readyz_keeps_the_reason_in_the_log(tmp_path, results):
    data_file = tmp_path / "data.json"
    with json_server(data_file).start() as server:
        token = register_and_login(server.url)
        data_file.write_bytes(b"")  # `: > data.json`

        refused = hello(server.url, token)
        registration = requests.post(
            f"{server.url}/register", json={"username": "mallory", "password": PASSWORD}, timeout=10
        )
        ready = requests.get(f"{server.url}/readyz", headers={"X-Request-ID": "drill-readyz-1"}, timeout=10)
        log_lines = [line for line in server.output().splitlines() if "drill-readyz-1" in line]
    results["data_file_truncated"] = {"hello": refused.status_code, "register": registration.status_code}

    assert_problem(refused, 503)
    assert_problem(registration, 503)
    assert data_file.read_bytes() == b""  # nothing was written over it
    assert_problem(ready, 503)
    assert ready.json()["detail"] == NOT_READY
    assert str(tmp_path) not in ready.text
    assert any("not ready" in line and "is empty" in line for line in log_lines)


def test_deleted_data_file_refuses_tokens_of_the_old_store(tmp_path, results):
    data_file = tmp_path / "data.json"
    with json_server(data_file).start() as server:
        token = register_and_login(server.url, "alice")
        data_file.unlink()
        assert_replaced_store_refuses_old_token(results, "data_file_recreated", server.url, token)


def test_symlinked_data_file_keeps_the_link_and_writes_its_target(tmp_path):
    target = tmp_path / "volume" / "users.json"
    target.parent.mkdir()
    link = tmp_path / "data.json"
    link.symlink_to(target)
    with json_server(link).start() as server:
        register_and_login(server.url, "alice")
        register_and_login(server.url, "bob")

    assert link.is_symlink()
    assert b'"username":"bob"' in target.read_bytes()


@pytest.fixture
def database(postgres_server):
    require_postgres_binaries()
    name = "drill_recreated"
    url = postgres_server.create_database(name)
    yield postgres_server, name, url
    postgres_server.drop_database(name)


def test_recreated_database_refuses_tokens_of_the_old_one(database, results):
    postgres_server, name, url = database
    env = {
        "DATABASE_URL": url,
        "SECRET_KEY": "s" * 48,
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    with GunicornServer(env, workers=2).start() as server:
        token = register_and_login(server.url, "alice")
        postgres_server.drop_database(name)
        postgres_server.create_database(name)
        subprocess.run(
            [sys.executable, "-m", "src.migrate"],
            cwd=REPO_ROOT,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
        )
        assert_replaced_store_refuses_old_token(results, "database_recreated", server.url, token)

"""Fixtures of the API tests: the app, its test client and AuthActions; each test runs twice.

``app`` is parametrised over the two stores, so every API test runs against a JSON file in ``tmp_path`` and
against a fresh database on the throwaway PostgreSQL server (harness/postgres.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from harness import FAST_ARGON2, free_port, in_ci
from src import create_app

# `make test` runs pytest under make, whose MAKEFLAGS (`make test VENV=.venv-3.13` puts VENV there) and
# MAKELEVEL would reach every `make` a test runs as a new user would, and change what it builds and prints.
# A user's own `make` starts without them.
for _name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
    os.environ.pop(_name, None)

TEST_SECRET_KEY = "test-signing-key-of-the-suite-0123456789abcdef-0123456789abcdef-0123"
PASSWORD = "correct horse battery"
PROBLEM = "application/problem+json"
# Every response carries these, written out here rather than read from src/security.py.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}


@pytest.fixture(autouse=True)
def _process_environment_restored() -> Iterator[None]:
    """Each test leaves os.environ as it found it: load_env_file (load_dotenv) writes a .env's variables into
    it, which monkeypatch cannot undo since it did not set them, and a later test would read them."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def root_logger_restored() -> Iterator[None]:
    """The root logger's handlers and level as before the test (the app installs its JSON handler there)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=["json", "postgresql"])
def app_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment the app is built from: a JSON file in tmp_path, or a fresh PostgreSQL database."""
    env = {**FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}
    if request.param == "postgresql":
        env.update(DATABASE_URL=request.getfixturevalue("postgres_url"), SECRET_KEY=TEST_SECRET_KEY)
    return env


@pytest.fixture
def make_app(app_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """Factory: ``make_app(VARIABLE="value", ...)`` builds an app from app_env plus those variables."""
    apps: list[Flask] = []

    def make(**overrides: str) -> Flask:
        app = create_app({**app_env, **overrides})
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["user_store"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class AuthActions:
    """Register, authenticate and call protected routes the way a client does."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, username: str = "alice", password: str = PASSWORD, **kwargs) -> TestResponse:
        return self.client.post("/register", json={"username": username, "password": password}, **kwargs)

    def authenticate(self, username: str = "alice", password: str = PASSWORD, **kwargs) -> TestResponse:
        return self.client.post("/authenticate", json={"username": username, "password": password}, **kwargs)

    def token(self, username: str = "alice", password: str = PASSWORD) -> str:
        """Register the user (unless it exists) and return a fresh access token for it."""
        self.register(username, password)
        response = self.authenticate(username, password)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["access_token"]

    def login(self, username: str = "alice", password: str = PASSWORD) -> dict:
        """Register the user (unless it exists), authenticate, and return the whole token answer."""
        self.register(username, password)
        response = self.authenticate(username, password)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def get(self, path: str, token: str) -> TestResponse:
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"})

    def refresh(self, refresh_token: str) -> TestResponse:
        return self.client.post("/token/refresh", json={"refresh_token": refresh_token})

    def logout(self, token: str) -> TestResponse:
        return self.client.post("/logout", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true a skipped test is a failed one: nothing may pass by not running."""
    report = yield
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true: {report.longrepr}"
    return report


def unreachable_database_url() -> str:
    """A PostgreSQL URL on a loopback port where nothing listens (a database outage)."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/absent"


def assert_problem(response: TestResponse, status: int) -> dict:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body

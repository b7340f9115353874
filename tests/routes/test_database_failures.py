"""PostgreSQL failing in the middle of a request: the client gets a 503 problem, never a 500.

A server of its own (stopping it must not disturb the session's server), the real app from ``create_app``
and its test client. Two moments of failure: the backend serving the request killed while its query runs
(``pg_terminate_backend``), and the server stopped after the pool has connections that look alive, so the
request checks out a connection that is dead by the time its query is sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask

from harness import wait_until
from harness.postgres import PostgresServer, new_server
from src import create_app
from tests.conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEY, assert_problem


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    server = new_server()
    yield server
    server.destroy()


@pytest.fixture
def app(server: PostgresServer) -> Iterator[Flask]:
    app = create_app(
        {
            **FAST_ARGON2,
            "DATABASE_URL": server.create_database("app"),
            "SECRET_KEY": TEST_SECRET_KEY,
            "DATABASE_TIMEOUT_SECONDS": "2",
        }
    )
    app.testing = True
    yield app
    app.extensions["user_store"].close()


def register(app: Flask, username: str):
    return app.test_client().post("/register", json={"username": username, "password": PASSWORD})


def test_the_backend_killed_while_the_insert_waits_answers_503_and_stores_nothing(server, app):
    assert register(app, "first").status_code == 201
    url = server.url_for("app")
    responses = []
    with psycopg.connect(url, autocommit=True) as locker, psycopg.connect(url, autocommit=True) as admin:
        # SHARE lets the registration look the name up but makes its INSERT wait: the query is running when
        # its backend is killed.
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE users IN SHARE MODE")
        request = threading.Thread(target=lambda: responses.append(register(app, "second")))
        request.start()

        def waiting() -> list[tuple[int, str]]:
            return admin.execute(
                "SELECT pid, query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchall()

        wait_until(waiting, timeout=30, what="the registration's query to wait on the lock")
        ((backend, query),) = waiting()
        assert query.startswith("INSERT INTO users")
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        request.join(30)
        locker.execute("ROLLBACK")

    assert not request.is_alive()
    assert_problem(responses[0], 503)
    assert responses[0].headers["Retry-After"] == "5"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT username FROM users ORDER BY id").fetchall() == [("first",)]
    assert register(app, "second").status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body", "recovered"),
    [
        ("POST", "/register", {"username": "newcomer", "password": PASSWORD}, 201),
        ("POST", "/authenticate", {"username": "early", "password": PASSWORD}, 200),
        ("GET", "/readyz", None, 200),
    ],
    ids=["register", "authenticate", "readyz"],
)
def test_the_server_stopped_after_the_pool_holds_live_connections_answers_503(  # noqa: PLR0917
    server, app, method, path, body, recovered
):
    client = app.test_client()
    assert register(app, "early").status_code == 201
    assert client.post("/authenticate", json={"username": "early", "password": PASSWORD}).status_code == 200
    server.stop()

    response = client.open(path, method=method, json=body)

    assert_problem(response, 503)
    server.start()
    assert client.open(path, method=method, json=body).status_code == recovered

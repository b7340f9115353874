"""The one error path: every failure is application/problem+json, never HTML, never a traceback."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import werkzeug.exceptions
from werkzeug.exceptions import BadGateway, Gone

from src.errors import problem
from tests.conftest import PASSWORD, SECURITY_HEADERS, assert_problem, unreachable_database_url

HTML_ACCEPT = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def failing_app(make_app):
    """An app with two extra routes: one that crashes, one that raises a werkzeug HTTP error."""
    app = make_app()

    def crash():
        raise RuntimeError("secret detail of the crash")

    def gone():
        raise Gone()

    def bad_gateway():
        raise BadGateway("upstream db-7.internal refused")

    app.add_url_rule("/crash", "crash", crash)
    app.add_url_rule("/gone", "gone", gone)

    def unauthorized():
        raise werkzeug.exceptions.Unauthorized()

    app.add_url_rule("/bad-gateway", "bad_gateway", bad_gateway)
    app.add_url_rule("/unauthorized", "unauthorized", unauthorized)
    return app


@pytest.mark.parametrize(("method", "path"), [("GET", "/nowhere"), ("POST", "/nowhere"), ("GET", "/hello/")])
def test_unknown_path_returns_404_problem(client, method, path):
    response = client.open(path, method=method, headers=HTML_ACCEPT)

    assert assert_problem(response, 404)["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/register", "POST"),
        ("PUT", "/authenticate", "POST"),
        ("POST", "/hello", "GET"),
        ("DELETE", "/id", "GET"),
    ],
)
def test_wrong_method_returns_405_problem_with_allow(client, method, path, allowed):
    response = client.open(path, method=method, headers=HTML_ACCEPT)

    assert_problem(response, 405)
    assert allowed in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/register", "/authenticate"])
def test_body_over_the_limit_returns_413_problem(make_app, path):
    client = make_app(MAX_CONTENT_LENGTH="1024").test_client()

    response = client.post(path, json={"username": "alice", "password": "x" * 2000})

    assert_problem(response, 413)


def test_form_body_over_the_limit_returns_413_problem(make_app):
    client = make_app(MAX_CONTENT_LENGTH="1024").test_client()

    response = client.post("/register", data={"username": "alice", "password": "x" * 2000})

    assert_problem(response, 413)


def test_default_body_limit_is_one_mebibyte(client):
    just_over = b'{"username": "alice", "password": "' + b"x" * 1_048_576 + b'"}'

    assert_problem(client.post("/register", data=just_over, content_type="application/json"), 413)


def test_unexpected_exception_returns_500_problem_without_traceback(failing_app, caplog):
    with caplog.at_level(logging.ERROR):
        response = failing_app.test_client().get("/crash", headers=HTML_ACCEPT)

    body = assert_problem(response, 500)
    assert body["detail"] == "The server could not complete the request."
    assert b"Traceback" not in response.data
    assert b"secret detail" not in response.data
    assert "secret detail of the crash" in caplog.text


def test_werkzeug_http_errors_become_problems(failing_app):
    response = failing_app.test_client().get("/gone", headers=HTML_ACCEPT)

    assert assert_problem(response, 410)["title"] == "Gone"


def test_werkzeug_401_gets_the_bearer_challenge(failing_app):
    response = failing_app.test_client().get("/unauthorized")

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_werkzeug_server_errors_hide_their_description(failing_app):
    response = failing_app.test_client().get("/bad-gateway")

    body = assert_problem(response, 502)
    assert body["detail"] == "The server could not complete the request."
    assert b"db-7.internal" not in response.data


def test_problem_with_a_status_outside_the_standard_set_is_titled_error():
    response = problem(599, "Something unusual.")

    assert response.get_json() == {
        "type": "about:blank",
        "title": "Error",
        "status": 599,
        "detail": "Something unusual.",
    }


def test_store_outage_on_a_protected_route_returns_503(make_app, auth, app_env):
    token = auth.token()
    if "DATABASE_URL" in app_env:
        outage = make_app(DATABASE_URL=unreachable_database_url(), DATABASE_TIMEOUT_SECONDS="1")
    else:
        Path(app_env["DATA_FILE_PATH"]).write_text("[corrupt")
        outage = make_app()

    response = outage.test_client().get("/hello", headers={"Authorization": f"Bearer {token}"})

    assert_problem(response, 503)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/hello", 401),
        ("POST", "/register", 400),
        ("GET", "/nowhere", 404),
        ("PATCH", "/hello", 405),
    ],
)
def test_every_response_carries_request_id_and_security_headers(client, method, path, status):
    response = client.open(path, method=method)

    assert response.status_code == status
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_request_id_of_the_caller_is_echoed(client):
    response = client.get("/nowhere", headers={"X-Request-ID": "trace-1234"})

    assert response.headers["X-Request-ID"] == "trace-1234"


def test_error_bodies_name_no_internal_path(auth, client):
    auth.register("alice")

    responses = [
        client.get("/nowhere"),
        client.post("/register", data="x", content_type="text/plain"),
        auth.authenticate("alice", "wrong password"),
        auth.register("alice", PASSWORD),
    ]

    for response in responses:
        assert b"/tmp" not in response.data
        assert b"src/" not in response.data


BAD_BODIES = {
    "JSON nested 2,000 deep": (b"[" * 2000 + b"]" * 2000, "application/json"),
    "password with a lone surrogate": (
        b'{"username": "alice", "password": "abcdefgh\\ud800"}',
        "application/json",
    ),
    "JSON that is not UTF-8": (b'{"username": "\xff\xfe", "password": "abcdefghij"}', "application/json"),
    "form that is not UTF-8": (b"username=%ff%fe&password=abcdefghij", "application/x-www-form-urlencoded"),
    "NaN as password": (b'{"username": "alice", "password": NaN}', "application/json"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("path", ["/register", "/authenticate"])
def test_malformed_body_returns_400_problem(client, path, name):
    body, content_type = BAD_BODIES[name]

    assert_problem(client.post(path, data=body, content_type=content_type), 400)


@pytest.mark.parametrize("path", ["/register", "/authenticate"])
def test_chunked_body_over_the_limit_returns_413_problem(make_app, path):
    client = make_app(MAX_CONTENT_LENGTH="1024").test_client()
    body = b'{"username": "alice", "password": "' + b"a" * 2000 + b'"}'

    response = client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert_problem(response, 413)

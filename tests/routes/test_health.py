"""GET /healthz, GET /readyz and GET /openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import src.lifecycle
from src.routes import openapi
from tests.conftest import PASSWORD, assert_problem, unreachable_database_url


@pytest.fixture
def broken_store_app(make_app, app_env):
    """An app whose store cannot be used: a corrupt data file, or a database nobody listens for."""
    if "DATABASE_URL" in app_env:
        return make_app(DATABASE_URL=unreachable_database_url(), DATABASE_TIMEOUT_SECONDS="1")
    Path(app_env["DATA_FILE_PATH"]).write_text("{this is not json")
    return make_app()


@pytest.fixture
def draining():
    src.lifecycle.start_draining()
    yield
    src.lifecycle._draining.clear()


def test_healthz_returns_200(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_the_same_before_flask_and_through_it(client):
    # A probe (no Origin) is answered before Flask's request machinery; a request with an Origin goes through
    # Flask, for the CORS extension. Both answers are the same bytes.
    probe = client.get("/healthz")
    through_flask = client.get("/healthz", headers={"Origin": "https://app.example"})

    for response in (probe, through_flask):
        assert response.status_code == 200
        assert response.data == b'{"status":"ok"}\n'
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Content-Length"] == "16"


def test_healthz_head_has_the_headers_and_no_body(client):
    response = client.head("/healthz")

    assert response.status_code == 200
    assert response.headers["Content-Length"] == "16"
    assert response.data == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_healthz_refuses_other_methods_with_405_and_allow(client, method):
    response = client.open("/healthz", method=method)

    assert_problem(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_healthz_returns_200_while_the_store_is_unusable(broken_store_app):
    assert broken_store_app.test_client().get("/healthz").status_code == 200


def test_readyz_returns_200_when_the_store_is_usable(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_readyz_returns_503_with_a_fixed_sentence_and_logs_the_reason(broken_store_app, caplog):
    response = broken_store_app.test_client().get("/readyz", headers={"X-Request-ID": "probe-42"})

    body = assert_problem(response, 503)
    assert body["detail"] == "The service is not ready to serve requests."
    reasons = [record for record in caplog.records if record.getMessage().startswith("not ready: ")]
    assert len(reasons) == 1
    assert len(reasons[0].getMessage()) > len("not ready: ")


@pytest.mark.usefixtures("draining")
def test_readyz_returns_503_while_draining(client):
    response = client.get("/readyz")

    assert assert_problem(response, 503)["detail"] == "The service is not ready to serve requests."


@pytest.mark.usefixtures("draining")
def test_healthz_returns_200_while_draining(client):
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/register", "/authenticate"])
def test_store_outage_gives_503_not_500(broken_store_app, path):
    response = broken_store_app.test_client().post(path, json={"username": "alice", "password": PASSWORD})

    body = assert_problem(response, 503)
    assert body["detail"] == "The user store is unavailable; try again later."
    assert response.headers["Retry-After"].isdigit()


def test_probes_answer_200_from_an_address_every_limit_has_shut_out(make_app):
    # The kubelet probes from the node's address, which may also be the address the limits see for other
    # traffic (a node-local proxy, hostNetwork clients): an address refused by every limit still gets its
    # probes answered.
    client = make_app(REGISTER_MAX_PER_ADDRESS="1", AUTH_MAX_FAILURES_PER_ADDRESS="1").test_client()

    def post(path: str, username: str, password: str) -> int:
        return client.post(path, json={"username": username, "password": password}).status_code

    registrations = [post("/register", name, PASSWORD) for name in ("alice", "bob")]
    logins = [post("/authenticate", "alice", "wrong password") for _ in range(2)]
    probes = [client.get(path).status_code for path in ("/healthz", "/readyz", "/healthz", "/readyz")]

    assert (registrations, logins) == ([201, 429], [401, 429])
    assert probes == [200, 200, 200, 200]


def test_openapi_document_is_served_as_json(client):
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document == json.loads(openapi.DOCUMENT_PATH.read_text())
    assert document["openapi"].startswith("3.")


def test_openapi_returns_404_problem_when_the_document_is_absent(make_app, monkeypatch, tmp_path):
    monkeypatch.setattr(openapi, "DOCUMENT_PATH", tmp_path / "absent.json")

    response = make_app().test_client().get("/openapi.json")

    assert assert_problem(response, 404)["detail"] == "No API description is installed."

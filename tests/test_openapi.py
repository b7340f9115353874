"""src/openapi.json: a valid OpenAPI 3.1 document that describes exactly the routes the app serves."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate

from src import create_app

SPEC_PATH = Path(__file__).resolve().parent.parent / "src" / "openapi.json"
SPEC = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
METHODS = {"get", "post", "put", "patch", "delete"}
PASSWORD = "correct horse battery"


@pytest.fixture
def spec_app(tmp_path):
    """The app on a JSON store in a temp folder (the routes do not depend on the store)."""
    return create_app(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "SECRET_KEY": secrets.token_hex(32),
            "ARGON2_TIME_COST": "2",
            "ARGON2_MEMORY_KIB": "19456",
            "ARGON2_PARALLELISM": "1",
        }
    )


@pytest.fixture
def spec_client(spec_app):
    return spec_app.test_client()


def operations():
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(node: dict) -> dict:
    """The node a chain of local ``$ref``s leads to."""
    while "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def flask_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        # /docs is a page for people over this document, not an operation of the API (docs/api.md).
        if rule.endpoint == "static" or rule.endpoint.startswith("docs."):
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<{argument}>", f"{{{argument}}}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def assert_conforms(path: str, method: str, response) -> None:
    """The response's status, media type, headers and body are the ones the document declares."""
    operation = SPEC["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} answered undocumented {status}"
    declared = resolve(operation["responses"][status])
    if "content" not in declared:  # 204
        assert response.data == b"", f"{method.upper()} {path} {status}: a body where none is declared"
        assert "Content-Type" not in response.headers, f"{method.upper()} {path} {status}: a Content-Type"
        return
    media_type = response.mimetype
    assert media_type in declared["content"], f"{method.upper()} {path} {status}: {media_type} undocumented"
    for name, reference in declared.get("headers", {}).items():
        header = resolve(reference)
        if header.get("required"):
            assert name in response.headers, f"{method.upper()} {path} {status}: header {name} missing"
            jsonschema.validate(response.headers[name], header["schema"])
    schema = declared["content"][media_type]["schema"]
    if media_type.endswith("json"):
        # The wrapper lets the "#/components/..." references resolve against the document.
        jsonschema.validate(response.get_json(), {**schema, "components": SPEC["components"]})


def test_document_is_valid_openapi_3_1():
    assert SPEC["openapi"].startswith("3.1")
    validate(SPEC)


def test_every_flask_route_is_described_and_every_described_route_is_served(spec_app):
    described = {(path, method) for path, method, _ in operations()}
    assert flask_routes(spec_app) == described


def test_openapi_json_serves_the_file(spec_client):
    response = spec_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == SPEC


def test_every_error_response_is_problem_json_with_a_request_id():
    for path, method, operation in operations():
        for status, reference in operation["responses"].items():
            response = resolve(reference)
            assert "X-Request-ID" in response["headers"], f"{method} {path} {status}"
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], f"{method} {path} {status}"
                assert response["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }


def test_problem_schema_requires_type_title_status_detail():
    assert set(SPEC["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}


def test_401_declares_www_authenticate_and_429_and_503_declare_retry_after():
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            headers = resolve(response)["headers"]
            if status == "401":
                assert "WWW-Authenticate" in headers, f"{method} {path}"
            if status in ("429", "503"):
                assert "Retry-After" in headers, f"{method} {path} {status}"


def test_bearer_routes_declare_the_security_scheme_and_401():
    assert SPEC["components"]["securitySchemes"]["bearerAuth"] == {
        **SPEC["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    for path, method in (
        ("/id", "get"),
        ("/hello", "get"),
        ("/logout", "post"),
        ("/users/me", "get"),
        ("/users/me", "delete"),
        ("/users/me/password", "put"),
    ):
        operation = SPEC["paths"][path][method]
        assert operation["security"] == [{"bearerAuth": []}]
        assert "401" in operation["responses"]


def test_credentials_are_accepted_as_json_and_as_form():
    for path in ("/register", "/authenticate"):
        content = SPEC["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/x-www-form-urlencoded"}


def test_responses_of_the_app_match_the_document(spec_client):
    """Each route once on its success path and on its main errors, checked against the document."""
    credentials = {"username": "spec.user", "password": PASSWORD}

    response = spec_client.post("/register", json=credentials)
    assert response.status_code == 201
    assert_conforms("/register", "post", response)
    response = spec_client.post("/register", data={"username": "spec-form", "password": PASSWORD})
    assert response.status_code == 201
    assert_conforms("/register", "post", response)
    for body, status in (
        (credentials, 409),
        ({"username": "x"}, 400),
        ({"username": " a", "password": PASSWORD}, 400),
    ):
        response = spec_client.post("/register", json=body)
        assert response.status_code == status
        assert_conforms("/register", "post", response)

    response = spec_client.post("/authenticate", json={"username": "spec.user", "password": "wrong password"})
    assert response.status_code == 401
    assert_conforms("/authenticate", "post", response)
    response = spec_client.post("/authenticate", json=credentials)
    assert response.status_code == 200
    assert_conforms("/authenticate", "post", response)
    token = response.get_json()["access_token"]

    for path in ("/id", "/hello"):
        response = spec_client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert_conforms(path, "get", response)
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = spec_client.get(path, headers=headers)
            assert response.status_code == 401
            assert_conforms(path, "get", response)

    for path in ("/healthz", "/readyz", "/openapi.json"):
        response = spec_client.get(path)
        assert response.status_code == 200
        assert_conforms(path, "get", response)


def test_responses_of_the_session_routes_match_the_document(spec_client):
    """Refresh, logout, /users/me, password change and deletion on their success paths and main errors."""
    credentials = {"username": "spec.user", "password": PASSWORD}
    spec_client.post("/register", json=credentials)

    def login() -> dict:
        response = spec_client.post("/authenticate", json=credentials)
        assert response.status_code == 200
        return response.get_json()

    def call(method: str, path: str, status: int, token: str | None = None, **kwargs) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = spec_client.open(path, method=method.upper(), headers=headers, **kwargs)
        assert response.status_code == status
        assert_conforms(path, method, response)

    session = login()
    call("post", "/token/refresh", 200, json={"refresh_token": session["refresh_token"]})
    call("post", "/token/refresh", 401, json={"refresh_token": session["refresh_token"]})
    call("post", "/token/refresh", 400, json={})
    call("post", "/token/refresh", 415, data=b"x", content_type="text/plain")

    session = login()
    call("get", "/users/me", 200, session["access_token"])
    call("post", "/logout", 204, session["access_token"])
    call("post", "/logout", 401, session["access_token"])
    call("get", "/users/me", 401, session["access_token"])

    token = login()["access_token"]
    change = {"current_password": PASSWORD, "new_password": "another passphrase"}
    call("put", "/users/me/password", 400, token, json={**change, "new_password": PASSWORD})
    call("put", "/users/me/password", 401, token, json={**change, "current_password": "wrong password"})
    call("put", "/users/me/password", 204, token, json=change)

    credentials["password"] = "another passphrase"
    token = login()["access_token"]
    call("delete", "/users/me", 401, token, json={"password": "wrong password"})
    call("delete", "/users/me", 400, token, json={})
    call("delete", "/users/me", 204, token, json={"password": "another passphrase"})


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_body_over_the_limit_is_a_documented_413(spec_client, spec_app, content_type):
    limit = spec_app.config["MAX_CONTENT_LENGTH"]
    response = spec_client.post("/register", data=b"a" * (limit + 1), content_type=content_type)
    assert response.status_code == 413
    assert_conforms("/register", "post", response)


def test_the_committed_document_is_the_one_the_routes_and_models_build(spec_app):
    from src.apidoc import build_document, render

    assert SPEC_PATH.read_text(encoding="utf-8") == render(build_document(spec_app)), "run make openapi"

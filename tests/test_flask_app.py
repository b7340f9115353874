"""The service's Flask class (src/flask_app.py): a request answered from a remembered binding and match gets
the answer Flask's own path gives, and what is remembered stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask, g

from harness import FAST_ARGON2
from src import create_app


@pytest.fixture
def json_app(tmp_path: Path) -> Flask:
    app = create_app({**FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")})
    app.testing = True
    return app


# (method, path, headers) -> (status, Location): what Flask 3.1 answers. Each is asked three times in a row
# below: the first request binds a new host, the second is matched and remembered, the third is answered from
# what the others left behind.
ANSWERS = [
    ("GET", "/hello", {}, 401, None),
    ("POST", "/hello", {}, 405, None),
    ("GET", "/users//me", {}, 308, "http://localhost/users/me"),
    ("GET", "/users//me", {"Host": "api.example:8443"}, 308, "http://api.example:8443/users/me"),
    ("GET", "/users//me", {"Host": "API.Example"}, 308, "http://api.example/users/me"),
    ("GET", "/users//me", {"Host": "bücher.example"}, 308, "http:///users/me"),  # not ASCII: no valid host
    ("GET", "/users//me", {"Host": "api.example:99999"}, 308, "http:///users/me"),  # no valid host
    ("GET", "/users//me", {"Host": "bad host"}, 308, "http:///users/me"),
    ("GET", "/hell%C3%A9", {}, 404, None),
    ("GET", "/hello", {"Connection": "Upgrade", "Upgrade": "websocket"}, 400, None),  # no WebSocket route
]


@pytest.mark.parametrize(
    "answer", ANSWERS, ids=[f"{method} {path} {headers}" for method, path, headers, *_ in ANSWERS]
)
def test_a_request_gets_the_same_answer_each_time(json_app, answer):
    method, path, headers, status, location = answer
    client = json_app.test_client()
    for _ in range(3):
        response = client.open(path, method=method, headers=headers)
        assert (response.status_code, response.headers.get("Location")) == (status, location)


def test_each_host_gets_its_own_links_after_another_was_remembered(json_app):
    client = json_app.test_client()
    for host in ("a.example", "b.example:8080", "a.example"):
        response = client.get("/users//me", headers={"Host": host})
        assert response.headers["Location"] == f"http://{host}/users/me"


def test_a_remembered_match_is_made_by_method(json_app):
    client = json_app.test_client()
    for method, status in (("GET", 401), ("GET", 401), ("DELETE", 405), ("GET", 401)):
        assert client.open("/hello", method=method).status_code == status


def test_a_path_is_read_as_utf8_when_its_match_is_remembered(json_app):
    json_app.add_url_rule("/items/<name>", "item", lambda name: {"name": name})
    client = json_app.test_client()
    for _ in range(3):
        assert client.get("/items/caf%C3%A9").get_json() == {"name": "café"}


def test_a_view_that_takes_its_arguments_leaves_the_next_request_its_own(json_app):
    @json_app.url_value_preprocessor
    def take_item(endpoint, values):
        if values:
            g.item = values.pop("item")

    json_app.add_url_rule("/items/<int:item>", "item", lambda: {"item": g.item})
    client = json_app.test_client()
    for _ in range(3):
        response = client.get("/items/7")
        assert (response.status_code, response.get_json()) == (200, {"item": 7})


def test_hosts_remembered_stay_bounded(json_app):
    client = json_app.test_client()
    for number in range(200):
        host = f"h{number}.example"
        assert (
            client.get("/users//me", headers={"Host": host}).headers["Location"] == f"http://{host}/users/me"
        )

    assert len(json_app._known_hosts) == 64


def test_matches_remembered_stay_bounded(json_app):
    json_app.add_url_rule("/items/<int:item>", "item", lambda item: {"item": item})
    client = json_app.test_client()
    for number in range(5000):
        assert client.get(f"/items/{number}").get_json() == {"item": number}

    assert len(json_app._known_matches) == 4096

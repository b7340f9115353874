"""What docs/api.md and the README's route table show is what a real gunicorn answers."""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlsplit

import requests

from tests.conftest import FAST_ARGON2
from tools.docs import REPO

UNSET = dict.fromkeys(("DATABASE_URL", "SECRET_KEY", "METRICS_PORT", "GUNICORN_BIND", "AUTH_MAX_FAILURES"))


def status_line(url: str, path: str) -> str:
    """The status line of a GET as it came over the wire ("HTTP/1.1 401 Unauthorized")."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return f"HTTP/1.{response.version % 10} {response.status} {response.reason}"
    finally:
        connection.close()


def route_statuses(route: str) -> set[int]:
    """The status codes of one row of the README's route table ("| `POST /register` | ... |")."""
    row = next(
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| `{route}`")
    )
    return {int(code) for code in re.findall(r"\b([1-5]\d\d)\b", row)}


def test_the_status_line_in_the_api_page_is_the_servers(gunicorn_server, tmp_path):
    documented = re.findall(r"^# (HTTP/1\.1 401 .*)$", (REPO / "docs" / "api.md").read_text(), re.M)
    server = gunicorn_server(
        {**UNSET, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json")}, workers=1
    )

    assert documented == [status_line(server.url, "/hello")]


def test_register_answers_429_past_the_per_address_limit_as_the_route_table_says(gunicorn_server, tmp_path):
    env = {
        **UNSET,
        **FAST_ARGON2,
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "REGISTER_MAX_PER_ADDRESS": "1",
    }
    server = gunicorn_server(env, workers=1)
    first = requests.post(
        f"{server.url}/register", json={"username": "ann", "password": "correct horse"}, timeout=30
    )
    second = requests.post(
        f"{server.url}/register", json={"username": "bea", "password": "correct horse"}, timeout=30
    )

    assert first.status_code == 201
    assert second.status_code == 429
    assert 429 in route_statuses("POST /register")

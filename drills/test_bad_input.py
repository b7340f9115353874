"""Malformed bodies against a real gunicorn and through the nginx proxy: each one a 4xx problem+json."""

from __future__ import annotations

import socket

import pytest
import requests

from harness.gunicorn import GunicornServer
from harness.nginx import NginxProxy

from .conftest import assert_problem

LIMIT = 4096
JSON = {"Content-Type": "application/json"}

# (name, body, headers, status)
CASES = [
    ("JSON nested 2,000 deep", b"[" * 2000 + b"]" * 2000, JSON, 400),
    ("JSON object nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, 413),
    ("password with a lone surrogate", b'{"username": "alice", "password": "abcdefgh\\ud800"}', JSON, 400),
    ("body that is not UTF-8", b'{"username": "\xff\xfe", "password": "abcdefghij"}', JSON, 400),
    ("UTF-16 without a BOM", '{"username": "a"}'.encode("utf-16-le"), JSON, 400),
    (
        "form that is not UTF-8",
        b"username=%ff%fe&password=abcdefghij",
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
    ),
    ("NUL in the username", b'{"username": "al\\u0000ice", "password": "abcdefghij"}', JSON, 400),
    ("number of 4,000 digits", b'{"username": ' + b"9" * 4000 + b', "password": "abcdefghij"}', JSON, 400),
    ("NaN as password", b'{"username": "alice", "password": NaN}', JSON, 400),
    ("declared body over the limit", b"{" + b" " * LIMIT + b"}", JSON, 413),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    env = {
        "DATA_FILE_PATH": str(tmp_path_factory.mktemp("bad-input") / "data.json"),
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": None,
        "MAX_CONTENT_LENGTH": str(LIMIT),
    }
    with GunicornServer(env, workers=2).start() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(app):
    with NginxProxy(f"127.0.0.1:{app.port}", max_content_length=LIMIT).start() as started:
        yield started


def chunked_post(port: int, path: str, size: int) -> tuple[int, str, bytes]:
    """POST a JSON body of ``size`` bytes in chunks, without Content-Length; (status, content type, body)."""
    body = b'{"username": "alice", "password": "' + b"a" * (size - 40) + b'"}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        for start in range(0, len(body), 1000):
            piece = body[start : start + 1000]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, content = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), content


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("path", ["/register", "/authenticate"])
@pytest.mark.parametrize("via", ["app", "proxy"])
def test_bad_body_is_a_4xx_problem(request, via, path, case):
    _name, body, headers, status = case
    url = request.getfixturevalue(via).url
    response = requests.post(f"{url}{path}", data=body, headers=headers, timeout=30)

    assert_problem(response, status)


@pytest.mark.parametrize("via", ["app", "proxy"])
def test_chunked_body_over_the_limit_is_413(request, via, results):
    port = request.getfixturevalue(via).port
    status, content_type, _ = chunked_post(port, "/register", LIMIT * 2)
    results.setdefault("bad_input", {})[f"chunked_over_limit_{via}"] = status

    assert status == 413
    assert content_type == "application/problem+json"


def test_chunked_body_within_the_limit_is_read_whole(app):
    status, content_type, _ = chunked_post(app.port, "/register", LIMIT - 100)

    # A 128-character password at most: the whole body was read and validated, not cut.
    assert (status, content_type) == (400, "application/problem+json")


def test_no_bad_input_left_a_traceback_or_a_5xx(app, proxy, results):
    output = app.output()
    results.setdefault("bad_input", {})["cases"] = [case[0] for case in CASES]

    assert "Traceback" not in output
    assert '"status": 5' not in output

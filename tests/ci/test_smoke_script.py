"""The k3d job's smoke test (.github/scripts/smoke-test.sh) passes against the real service and fails against
one that breaks any part of the contract.

It passes against the application under a real ``gunicorn`` (the JSON store in a temp folder), with /metrics
on the application port and on METRICS_PORT, and with ``--metrics-not-public`` (the k3d job's call through
the Ingress, where /metrics answers 404). Its failures are shown against a small
stand-in on 127.0.0.1 that keeps the contract except for one behaviour each: the real application cannot be
made to break on purpose. The script runs curl: marked ``system`` (``make test-system`` installs curl).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import free_port

pytestmark = pytest.mark.system

SCRIPT = Path(__file__).resolve().parents[2] / ".github" / "scripts" / "smoke-test.sh"
TOKEN = "token-of-the-stand-in"
REFRESH_TOKENS = ("first-refresh-token", "second-refresh-token")


def make_handler(broken: str | None):
    """A handler keeping the HTTP contract, except for the one behaviour named by `broken`."""
    users: dict[str, int] = {}
    # Sessions of the stand-in: live access tokens, and refresh tokens with whether they were spent.
    live: set[str] = set()
    refresh_spent: dict[str, bool] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def reply(self, status: int, body: object, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            fields = json.loads(self.rfile.read(length)) if length else {}
            if self.path == "/register":
                name = fields["username"]
                if name in users and broken != "duplicate-accepted":
                    self.reply(409, {"title": "Conflict", "status": 409})
                else:
                    users[name] = len(users) + 1
                    self.reply(201, {"id": 0 if broken == "id-zero" else users[name], "username": name})
            elif self.path == "/authenticate":
                token = f"{TOKEN}-{len(live)}"
                live.add(token)
                refresh_spent[REFRESH_TOKENS[0]] = False
                self.reply(200, self.tokens(token, REFRESH_TOKENS[0]))
            elif self.path == "/token/refresh":
                presented = fields.get("refresh_token")
                if refresh_spent.get(presented, True) and broken != "refresh-reusable":
                    self.reply(401, {"status": 401})
                else:
                    refresh_spent[presented] = True
                    refresh_spent[REFRESH_TOKENS[1]] = False
                    self.reply(200, self.tokens(f"{TOKEN}-refreshed", REFRESH_TOKENS[1]))
            elif self.path == "/logout":
                token = self.bearer()
                if token not in live:
                    self.reply(401, {"status": 401})
                else:
                    if broken != "logout-ignored":
                        live.discard(token)
                    self.send_response(204)
                    self.end_headers()
            else:
                self.reply(404, {"status": 404})

        def tokens(self, access_token: str, refresh_token: str) -> dict:
            return {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh_token,
                "refresh_expires_in": 604800,
            }

        def bearer(self) -> str:
            return (self.headers.get("Authorization") or "").removeprefix("Bearer ")

        def do_GET(self):
            authorised = self.bearer() in live or broken == "no-auth"
            if self.path == "/readyz":
                self.reply(503 if broken == "not-ready" else 200, {"status": "ready"})
            elif self.path == "/metrics":
                if broken == "no-metrics":
                    self.reply(404, {"status": 404})
                else:
                    self.reply(200, "# TYPE requests counter\nrequests 1\n", "text/plain; version=0.0.4")
            elif self.path in ("/id", "/hello") and not authorised:
                self.reply(401, {"status": 401})
            elif self.path == "/id":
                self.reply(200, {"id": 99 if broken == "wrong-id" else max(users.values())})
            elif self.path == "/hello":
                self.reply(500 if broken == "hello-error" else 200, {"message": "Hello Smoke"})
            else:
                self.reply(404, {"status": 404})

    return Handler


@pytest.fixture
def stand_in(request) -> Iterator[str]:
    """Serve the stand-in on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(getattr(request, "param", None)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_smoke(base_url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), base_url, *extra], capture_output=True, text=True, timeout=60, check=False
    )


def real_service_env(tmp_path: Path, **overrides: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "DATABASE_URL": None,
        "SECRET_KEY": None,
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        "METRICS_ENABLED": None,
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
    }
    env.update(overrides)
    return env


def test_the_smoke_test_passes_against_the_real_service(gunicorn_server, tmp_path):
    server = gunicorn_server(real_service_env(tmp_path), workers=2)

    result = run_smoke(server.url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"smoke: all checks passed against {server.url}"


def test_the_smoke_test_passes_against_the_real_service_with_metrics_on_their_own_port(
    gunicorn_server, tmp_path
):
    metrics_port = free_port()
    server = gunicorn_server(real_service_env(tmp_path, METRICS_PORT=str(metrics_port)), workers=2)

    result = subprocess.run(
        ["bash", str(SCRIPT), server.url, f"http://127.0.0.1:{metrics_port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"smoke: all checks passed against {server.url}"


@pytest.mark.parametrize(
    "stand_in",
    [
        "not-ready",
        "duplicate-accepted",
        "id-zero",
        "no-auth",
        "wrong-id",
        "hello-error",
        "no-metrics",
        "refresh-reusable",
        "logout-ignored",
    ],
    indirect=True,
)
def test_the_smoke_test_fails_when_a_behaviour_breaks(stand_in):
    result = run_smoke(stand_in)
    assert result.returncode == 1
    assert "smoke: FAIL" in result.stderr


def test_the_smoke_test_fails_when_nothing_answers():
    result = run_smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no answer" in result.stderr


def test_on_the_public_entry_the_smoke_test_passes_against_the_real_service_with_metrics_apart(
    gunicorn_server, tmp_path
):
    server = gunicorn_server(real_service_env(tmp_path, METRICS_PORT=str(free_port())), workers=2)

    result = run_smoke(server.url, "--metrics-not-public")

    assert result.returncode == 0, result.stderr
    assert f"smoke: GET {server.url}/metrics -> 404" in result.stdout


def test_on_the_public_entry_the_smoke_test_fails_when_metrics_answer(stand_in):
    result = run_smoke(stand_in, "--metrics-not-public")
    assert result.returncode != 0
    assert "/metrics: status 200, expected 404" in result.stderr

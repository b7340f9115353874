"""The apps under test: the service and its two reference apps, served by gunicorn on 127.0.0.1.

Every app runs under the project's own ``gunicorn.conf.py`` (4 workers, the same timeouts, max-requests and
logging), through the test suite's launcher, so that the only differences are the application and its worker
class: each reference is served the way its users serve it (Flask: gunicorn's gthread worker, 8 threads,
keep-alive; FastAPI: uvicorn workers), the service by the class gunicorn.conf.py chooses (src/worker.py).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from flask_jwt_extended import create_access_token

from bench import reference_fastapi
from bench.reference_app import create_app as create_flask_reference
from harness.gunicorn import GunicornServer

WORKERS = 4
# Each worker makes its argon2 dummy hash (64 MiB, transient) as it boots: wait before measuring memory.
SETTLE_S = 3


@dataclass(frozen=True)
class Reference:
    """A reference app: its key, how it is served and how to get a token it accepts."""

    key: str
    title: str
    app: str
    extra_args: tuple[str, ...] = ()


FLASK = Reference(
    "flask",
    "Flask + flask-jwt-extended, gthread workers (8 threads)",
    "bench.reference_app:application",
    ("-k", "gthread", "--threads", "8"),
)
FASTAPI = Reference(
    "fastapi",
    "FastAPI + PyJWT, uvicorn workers",
    "bench.reference_fastapi:application",
    ("-k", "uvicorn_worker.UvicornWorker"),
)
REFERENCES = (FLASK, FASTAPI)


@dataclass
class Running:
    """A started server and the bearer token that opens its /hello."""

    server: GunicornServer
    token: str
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


def served(app: str, env: dict[str, str | None], extra_args: tuple[str, ...] = ()) -> GunicornServer:
    """``gunicorn -c gunicorn.conf.py -w 4 <app>`` on 127.0.0.1, started; ``with`` stops it by its pid.

    METRICS_PORT is dropped so that /metrics stays on the app port.
    """
    server = GunicornServer({**env, "METRICS_PORT": None}, workers=WORKERS, app=app, extra_args=extra_args)
    return server.start(timeout=120)


def reference_token(reference: Reference, secret: str) -> str:
    """A token the reference app accepts for its one user."""
    if reference is FLASK:
        with create_flask_reference(secret).app_context():
            return create_access_token(identity="alice")
    return reference_fastapi.token(secret)


def start_reference(reference: Reference, base_env: dict) -> Running:
    """Serve a reference app with its own worker class and check its token."""
    secret = secrets.token_hex(32)
    server = served(reference.app, {**base_env, "BENCH_REFERENCE_JWT_SECRET": secret}, reference.extra_args)
    token = reference_token(reference, secret)
    check_token(server.url, token, ("/hello",))
    return Running(server, token)


def check_token(url: str, token: str, paths: tuple[str, ...]) -> None:
    for path in paths:
        response = requests.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"{url}{path} refused the bench token: {response.status_code}")


def sign_in(url: str, username: str, password: str) -> str:
    """The user's token from the service, after checking that it opens /hello and /id."""
    response = requests.post(
        url + "/authenticate", json={"username": username, "password": password}, timeout=30
    )
    if response.status_code != 200:
        raise RuntimeError(f"/authenticate answered {response.status_code}: {response.text}")
    token = response.json()["access_token"]
    check_token(url, token, ("/hello", "/id"))
    return token


def memory(pids: list[int]) -> list[dict[str, float]]:
    """RSS and PSS in MiB of each pid, from /proc/<pid>/smaps_rollup."""
    rows = []
    for pid in pids:
        fields = {}
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                parts = line.split()
                if parts and parts[0] in ("Rss:", "Pss:"):
                    fields[parts[0][:-1].lower()] = int(parts[1]) / 1024
        except OSError:
            continue
        if fields:
            rows.append({"pid": pid, "rss_mib": round(fields["rss"], 1), "pss_mib": round(fields["pss"], 1)})
    return rows


def settle() -> None:
    time.sleep(SETTLE_S)

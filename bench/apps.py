"""The apps under test: the service and its three references, all on 127.0.0.1 with 4 workers.

The service and the two reference apps run under the project's own ``gunicorn.conf.py`` (the same timeouts,
max-requests and logging), through the test suite's launcher, so that the only differences are the
application and its worker class: each reference app is served the way its users serve it (Flask: gunicorn's
gthread worker, 8 threads, keep-alive; FastAPI: uvicorn workers), the service by the class gunicorn.conf.py
chooses (src/worker.py). The third reference is the service's own app under another server: Granian's Rust
HTTP server through its WSGI interface, with the same store and environment as the service it is compared to.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import requests
from flask_jwt_extended import create_access_token

from bench import reference_fastapi
from bench.reference_app import create_app as create_flask_reference
from harness.gunicorn import REPO_ROOT, GunicornServer

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
# The reference apps, started once per run; Granian serves the service's app: once per store and user count.
REFERENCES = (FLASK, FASTAPI)
GRANIAN = Reference(
    "granian",
    f"the service's own app and store under Granian {version('granian')} (--interface wsgi, Rust HTTP)",
    "src:application",
)


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


class GranianServer(GunicornServer):
    """``granian --interface wsgi --workers 4 <app>`` on 127.0.0.1, stopped like a gunicorn master.

    Granian has no gunicorn.conf.py: the application reads the same environment, and the Prometheus folder
    that gunicorn's master makes for its workers is made here (and removed by ``close``), so that the app
    records its metrics the same way.
    """

    def __init__(
        self, env: dict[str, str | None], workers: int = WORKERS, app: str = "src:application"
    ) -> None:
        super().__init__({**env, "METRICS_PORT": None}, workers=workers, app=app)
        self.metrics_dir: str | None = None

    def command(self) -> list[str]:
        return [
            granian_executable(),
            "--interface",
            "wsgi",
            "--workers",
            str(self.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            self.app,
        ]

    def start(self, timeout: float = 30) -> GranianServer:
        self.metrics_dir = tempfile.mkdtemp(prefix="flask-api-bench-metrics-")
        self.env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        super().start(timeout=timeout)
        return self

    def ready(self) -> bool:
        """/healthz answers 200 and every worker has said it started: one worker answers before the others."""
        return self._healthy() and self.output().count("Started worker-") >= self.workers

    def close(self) -> None:
        super().close()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def granian_executable() -> str:
    """The granian installed beside the running Python, else the project's .venv one."""
    for candidate in (Path(sys.executable).parent / "granian", REPO_ROOT / ".venv" / "bin" / "granian"):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError("granian not found beside " + sys.executable + " nor in .venv/bin")


def served_by_granian(env: dict[str, str | None]) -> GranianServer:
    """The service's app under Granian with the environment (store, keys) of the service it is compared to."""
    server = GranianServer(env)
    try:
        return server.start(timeout=120)
    except BaseException:
        server.close()
        raise


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

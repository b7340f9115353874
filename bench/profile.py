"""Where a request's CPU goes, piece by piece, in one process: the explanation behind ``make bench``.

    .venv/bin/python bench/profile.py   # writes bench/results/profile.{json,md}; `make docs` copies them

Each figure is CPU time (``time.process_time``, every thread of the process) per call, the best of 9 batches,
so that a busy machine inflates it less than wall time. What is measured:

- the token check: PyJWT's ``jwt.decode`` (what every request paid before) against the check of a token this
  process has verified already (``AccessTokens``);
- the service's WSGI application alone, per route, called in-process with a complete environ (``/healthz``
  twice: as a probe sends it, answered before Flask, and with an ``Origin``, which goes through Flask);
- the same requests as bytes through one of the worker's connections (``src/http1.py``: parsed by llhttp,
  answered on the event loop or handed to the thread pool and back, written out), one at a time, with the
  connection's transport replaced by one that keeps the bytes (``harness/http1.py``).

It needs no server, no network and no database (a JSON store in a temporary folder).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jwt  # noqa: E402

from bench import write_results  # noqa: E402

BATCHES = 9
PASSWORD = secrets.token_urlsafe(18)


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    """Best of BATCHES batches of ``calls`` calls: CPU microseconds per call."""

    def batch() -> None:
        for _ in range(calls):
            call()

    return cpu_per_batch(batch, calls)


def cpu_per_batch(batch: Callable[[], object], calls: int) -> float:
    """Best of BATCHES runs of ``batch``, which makes ``calls`` calls: CPU microseconds per call."""
    batch()  # warm
    best = float("inf")
    for _ in range(BATCHES):
        started = time.process_time()
        batch()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"profile: {what}")


def environ(path: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None) -> dict:
    """A WSGI environ as the worker builds it for a request from wrk."""
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8888",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8888",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        env.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/json")
    env.update(headers or {})
    return env


def call_wsgi(app, env: dict) -> tuple[str, bytes]:
    status: list[str] = []
    body = b"".join(app(env, lambda line, headers, exc_info=None: status.append(line)))
    return status[0], body


def raw_request(path: str, token: str | None) -> bytes:
    """The bytes a client sends for the same request."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:8888"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def profile(calls: int) -> dict:
    data = tempfile.mkdtemp(prefix="flask-api-profile-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(data, "metrics")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    from harness.http1 import Session  # noqa: PLC0415 - with the application, after the folder
    from src import create_app  # noqa: PLC0415 - after PROMETHEUS_MULTIPROC_DIR, as under gunicorn
    from src.worker import RoutePlacement, WsgiOnLoop  # noqa: PLC0415

    app = create_app({"SECRET_KEY": secrets.token_hex(32), "DATA_FILE_PATH": os.path.join(data, "data.json")})
    credentials = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    devnull = os.open(os.devnull, os.O_WRONLY)
    stdout = os.dup(1)
    os.dup2(devnull, 1)  # the access lines: one os.write each, as under gunicorn, into nothing
    try:
        status, _ = call_wsgi(app, environ("/register", "POST", credentials))
        expect(status.startswith("201"), f"/register answered {status}")
        status, body = call_wsgi(app, environ("/authenticate", "POST", credentials))
        expect(status.startswith("200"), f"/authenticate answered {status}")
        token = json.loads(body)["access_token"]
        bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        tokens = app.extensions["access_tokens"]
        figures = {
            "token check: PyJWT decode": cpu_per_call(
                lambda: jwt.decode(
                    token,
                    tokens.key,
                    algorithms=[tokens.ALGORITHM],
                    options={"require": ["exp", "iat", "sub"]},
                    leeway=tokens.LEEWAY_SECONDS,
                ),
                calls,
            ),
            "token check: already verified": cpu_per_call(lambda: tokens._verify(token), calls),
            "WSGI app: /healthz, a probe (answered before Flask)": cpu_per_call(
                lambda: call_wsgi(app, environ("/healthz")), calls
            ),
            "WSGI app: /healthz with an Origin (through Flask)": cpu_per_call(
                lambda: call_wsgi(app, environ("/healthz", headers={"HTTP_ORIGIN": "https://app.example"})),
                calls,
            ),
            "WSGI app: /hello": cpu_per_call(
                lambda: call_wsgi(app, environ("/hello", headers=bearer)), calls
            ),
        }
        placement = WsgiOnLoop.for_application(app, threads=1).runs_on_pool
        expect(isinstance(placement, RoutePlacement), "the service's routes are not placed by their rule")
        expect(not placement("GET", "/healthz"), "/healthz is offloaded")
        figures["placement: loop or pool, a path seen before"] = cpu_per_call(
            lambda: placement("GET", "/hello"), calls
        )
        figures["placement: loop or pool, matched afresh (a new path)"] = cpu_per_call(
            lambda: placement.matches_pool("GET", "/hello"), calls
        )
        on_loop = WsgiOnLoop(app, threads=8, runs_on_pool=lambda method, path: False, max_body=None)
        on_pool = WsgiOnLoop(app, threads=8, max_body=None)
        answered: list[int] = []

        def requests(session: Session, raw: bytes) -> None:
            session.repeat(raw, calls)
            answered.append(session.written.count(b"HTTP/1.1 200 OK\r\n"))
            session.transport.written.clear()

        for name, adapter in (("on the event loop", on_loop), ("handed to the thread pool", on_pool)):
            session = Session(adapter)
            for path, auth in (("/healthz", None), ("/hello", token)):
                raw = raw_request(path, auth)
                figures[f"worker connection, {name}: {path}"] = cpu_per_batch(
                    lambda session=session, raw=raw: requests(session, raw), calls
                )
            session.close()
        expect(set(answered) == {calls}, f"the connection answered {sorted(set(answered))} of {calls}")
        on_pool.pool.shutdown()
        on_loop.pool.shutdown()
    finally:
        os.dup2(stdout, 1)
        os.close(devnull)
    return {key: round(value, 1) for key, value in figures.items()}


def markdown(results: dict) -> str:
    lines = [
        f"Measured {results['started']} with Python {results['python']}, {results['calls']} calls per batch, "
        f"best of {BATCHES} batches; CPU microseconds per call (every thread of the process).",
        "",
        "| what | CPU µs per call |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {value:,.1f} |" for name, value in results["figures"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per batch (default 2000)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "profile.json")
    args = parser.parse_args()
    results = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "calls": args.calls,
        "figures": profile(args.calls),
    }
    write_results(args.output, results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

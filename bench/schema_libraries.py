"""What a validation library would cost per request, against plain Flask with the project's way (a pydantic
model validated by the route's own decorator): the measurement behind the choice in docs/performance.md.

    python3 -m venv .venv-schema-libs
    .venv-schema-libs/bin/pip install flask-openapi3==4.3.2 spectree==3.0.0 pyjwt
    .venv-schema-libs/bin/python bench/schema_libraries.py

The libraries are not dependencies of the project, hence a scratch virtualenv. Three minimal apps with the
same two routes, in one process: ``GET /hello`` (no body) and ``POST /authenticate`` whose JSON body is
validated as the same Credentials model, answered 200 without any work. CPU microseconds per request through
each WSGI app (bench/profile.py's helpers: the best of 9 batches), median of the rounds, apps alternating;
written to ``--output`` (default bench/results/schema-libraries.json, which ``make docs`` copies into
docs/figures/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from flask import Flask, request  # noqa: E402
from pydantic import BaseModel, Field, StrictStr  # noqa: E402

from bench.profile import call_wsgi, cpu_per_call, environ, expect  # noqa: E402


class Credentials(BaseModel):
    """The constraints of src/schemas.py's Credentials."""

    username: Annotated[
        StrictStr,
        Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-](?:[A-Za-z0-9 ._-]*[A-Za-z0-9._-])?$"),
    ]
    password: Annotated[StrictStr, Field(min_length=8, max_length=128)]


def plain_flask() -> Flask:
    """The project's way: the body validated by a call in the route (what ``@accepts`` does)."""
    app = Flask("plain")

    @app.get("/hello")
    def hello():
        return {"message": "Hello Alice"}

    @app.post("/authenticate")
    def authenticate():
        credentials = Credentials.model_validate(request.get_json())
        return {"username": credentials.username}

    return app


def flask_openapi3() -> Flask:
    from flask_openapi3 import OpenAPI  # noqa: PLC0415 - only in the scratch virtualenv

    app = OpenAPI("openapi3")

    @app.get("/hello")
    def hello():
        return {"message": "Hello Alice"}

    @app.post("/authenticate")
    def authenticate(body: Credentials):
        return {"username": body.username}

    return app


def spectree() -> Flask:
    from spectree import SpecTree  # noqa: PLC0415 - only in the scratch virtualenv

    app = Flask("spectree")
    spec = SpecTree("flask")

    @app.get("/hello")
    @spec.validate()
    def hello():
        return {"message": "Hello Alice"}

    @app.post("/authenticate")
    @spec.validate(json=Credentials)
    def authenticate():
        return {"username": request.context.json.username}  # type: ignore[attr-defined]

    spec.register(app)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "schema-libraries.json")
    args = parser.parse_args()
    apps = {
        "flask + own decorator": plain_flask(),
        "flask-openapi3": flask_openapi3(),
        "spectree": spectree(),
    }
    body = json.dumps({"username": "alice", "password": "correct horse battery"}).encode()
    requests = {"GET /hello": ("/hello", "GET", b""), "POST /authenticate": ("/authenticate", "POST", body)}
    for name, app in apps.items():
        for path, method, payload in requests.values():
            status, _ = call_wsgi(app, environ(path, method, payload))
            expect(status.startswith("200"), f"{name} {method} {path} answered {status}")
    rounds: dict[str, dict[str, list[float]]] = {name: {route: [] for route in requests} for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            for route, (path, method, payload) in requests.items():
                figure = cpu_per_call(lambda: call_wsgi(app, environ(path, method, payload)), args.calls)  # noqa: B023
                rounds[name][route].append(figure)
    medians = {
        name: {route: statistics.median(runs) for route, runs in routes.items()}
        for name, routes in rounds.items()
    }
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("flask", "pydantic", "flask-openapi3", "spectree")},
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "cpu_us_per_request": medians,
        "every_round": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"load average {result['load_average']}, median of {args.rounds} rounds, CPU µs per request")
    base = medians["flask + own decorator"]
    for name, figures in medians.items():
        cells = [f"{route} {figure:.1f} ({figure / base[route]:.2f}x)" for route, figure in figures.items()]
        print(f"  {name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

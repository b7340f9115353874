"""What validating request bodies with the pydantic models (src/schemas.py) costs per request, against the
hand-written checks they replaced: both trees in one run, in alternating rounds.

    .venv/bin/python bench/schema_cost.py --baseline 5a6da25   # the last commit with hand-written checks

Each round runs, in a fresh interpreter per tree (``git archive`` of the baseline into a temporary folder,
and this working tree), CPU microseconds per call (``time.process_time``, the best of 9 batches, with
bench/profile.py's helpers):

- ``GET /hello`` with a token, through the WSGI app (no body: nothing to validate);
- ``POST /authenticate`` whose password is too short: every check runs, then a 400, no argon2;
- the validation alone: a valid Credentials body read and checked inside a request context (the baseline's
  ``read_credentials()``, this tree's ``parse_body(Credentials, read_body())``).

Prints the median of the rounds per tree, the ratio this tree / baseline and the load average, and writes
them to ``--output`` (default bench/results/schema-cost.json, which ``make docs`` copies into docs/figures/).
No server, no network, no database.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after the tree under test: its ``src`` comes first (``measure``)

from bench.profile import call_wsgi, cpu_per_call, environ, expect  # noqa: E402

PASSWORD = secrets.token_urlsafe(18)


def measure(tree: Path, calls: int) -> dict[str, float]:
    """The figures of the code in ``tree`` (run in a child process whose ``src`` is that tree's)."""
    sys.path.insert(0, str(tree))
    data = tempfile.mkdtemp(prefix="flask-api-schema-cost-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(data, "metrics")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    from src import create_app  # noqa: PLC0415 - the tree's, after PROMETHEUS_MULTIPROC_DIR

    settings = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}
    app = create_app({**settings, "SECRET_KEY": os.urandom(32).hex(), "DATA_FILE_PATH": f"{data}/data.json"})
    credentials = {"username": "alice", "password": PASSWORD}
    body = json.dumps(credentials).encode()
    short = json.dumps({"username": "alice", "password": "short"}).encode()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the access lines go nowhere, as in bench/profile.py
    status, _ = call_wsgi(app, environ("/register", "POST", body))
    expect(status.startswith("201"), f"/register answered {status}")
    client = app.test_client()
    token = client.post("/authenticate", json=credentials).get_json()["access_token"]
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    status, _ = call_wsgi(app, environ("/hello", headers=bearer))
    expect(status.startswith("200"), f"/hello answered {status}")
    status, _ = call_wsgi(app, environ("/authenticate", "POST", short))
    expect(status.startswith("400"), f"a short password answered {status}")
    try:
        from src.schemas import Credentials, parse_body, read_body  # noqa: PLC0415

        def validate() -> object:
            return parse_body(Credentials, read_body())
    except ImportError:
        from src.routes.auth import read_credentials  # noqa: PLC0415 - the hand-written checks

        validate = read_credentials
    figures = {
        "GET /hello": cpu_per_call(lambda: call_wsgi(app, environ("/hello", headers=bearer)), calls),
        "POST /authenticate, 400 (password too short)": cpu_per_call(
            lambda: call_wsgi(app, environ("/authenticate", "POST", short)), calls
        ),
    }
    with app.test_request_context("/authenticate", method="POST", json=credentials):
        figures["validation alone (valid Credentials)"] = cpu_per_call(validate, calls * 10)
    return figures


def child(tree: Path, calls: int) -> dict[str, float]:
    completed = subprocess.run(  # noqa: S603 - this script, with paths it made
        [sys.executable, __file__, "--child", str(tree), "--calls", str(calls)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(completed.stderr.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision with the hand-written checks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "schema-cost.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.calls)), file=sys.stderr)
        return 0
    if not args.baseline:
        parser.error("--baseline is required")
    with tempfile.TemporaryDirectory(prefix="flask-api-baseline-") as baseline:
        archive = subprocess.run(  # noqa: S603
            ["git", "-C", str(REPO), "archive", args.baseline, "src"],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(baseline, filter="data")
        rounds: dict[str, list[dict[str, float]]] = {"baseline": [], "models": []}
        for _ in range(args.rounds):
            rounds["baseline"].append(child(Path(baseline), args.calls))
            rounds["models"].append(child(REPO, args.calls))
    medians = {
        tree: {name: statistics.median(figures[name] for figures in runs) for name in runs[0]}
        for tree, runs in rounds.items()
    }
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "baseline": args.baseline,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "cpu_us_per_call": medians,
        "ratio_models_to_baseline": {
            name: round(medians["models"][name] / medians["baseline"][name], 3)
            for name in medians["baseline"]
        },
        "every_round": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"load average {result['load_average']}, median of {args.rounds} rounds, CPU µs per call")
    for name in medians["baseline"]:
        base, models = medians["baseline"][name], medians["models"][name]
        print(f"  {name}: baseline {base:.1f}, models {models:.1f}, ratio {models / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

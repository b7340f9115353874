"""Schemathesis against a live ``gunicorn -w 4`` (the project's gunicorn.conf.py).

Once with the JSON store in a temp folder and once with a throwaway PostgreSQL: no 5xx, every response as
src/openapi.json describes it (status, media type, headers, body), every error an application/problem+json
document with type, title, status and detail (.ci/fuzz_hooks.py), and no error line in the server's log.
Servers are the test suite's own launchers (harness/), on loopback only, stopped by their pid.

Usage: .venv/bin/python .ci/check_fuzz.py   (FUZZ_MAX_EXAMPLES=<n> per operation, default 100)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python .ci/check_fuzz.py` puts .ci/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from fuzz_hooks import LOGOUT_CREDENTIALS  # noqa: E402 - beside this script

from harness.gunicorn import GunicornServer  # noqa: E402
from harness.postgres import new_server  # noqa: E402

CHECKS = (
    "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance,"
    "response_headers_conformance,problem_json_errors"
)
CREDENTIALS = {"username": "fuzz.user", "password": "fuzzing password 1"}


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL of our own
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


def fuzz(store: str, database_url: str | None, work: Path) -> bool:
    """Serve the API from one store, sign one user in, fuzz every operation; True when all passed."""
    print(f"check-fuzz: {store} store", flush=True)
    work.mkdir()
    # OWASP-minimum argon2 keeps registrations cheap; the login limiter stays on (its 429 is described).
    env = {
        "DATABASE_URL": database_url,
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        "DATA_FILE_PATH": str(work / "data.json"),
        "SECRET_KEY": secrets.token_hex(32),
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        # A slot for each of the at most three requests in flight (two Schemathesis workers and the logout
        # hook's sign-in): on a busy machine a second hash in one worker would otherwise wait past the slot
        # wait and get the load-shedding 503, which not_a_server_error counts. drills/ covers the shedding.
        "ARGON2_CONCURRENCY": "4",
        "AUTH_MAX_FAILURES": "5",
        # Every case comes from one address: a registration or refresh limit would turn most of them into
        # 429s. drills/test_guess_limits.py and tests/routes/test_sessions.py cover them.
        "REGISTER_MAX_PER_ADDRESS": "0",
        "REFRESH_MAX_PER_ADDRESS": "0",
        "LOG_LEVEL": "warning",
    }
    with GunicornServer(env, workers=4).start(timeout=60) as server:
        post(server.url, "/register", CREDENTIALS)
        post(server.url, "/register", LOGOUT_CREDENTIALS)
        token = post(server.url, "/authenticate", CREDENTIALS)["access_token"]
        # The hooks sign operations in (fuzz_hooks.before_call): no sign-up of Schemathesis's own.
        config = work / "schemathesis.toml"
        config.write_text("[auth]\nauto-signup = false\n")
        # Run in the store's folder: Schemathesis and Hypothesis keep their caches in the working directory.
        result = subprocess.run(  # noqa: S603 - the venv's own schemathesis, arguments of our own
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{server.url}/openapi.json",
                "--url",
                server.url,
                "--checks",
                CHECKS,
                "--max-examples",
                os.environ.get("FUZZ_MAX_EXAMPLES", "100"),
                "--workers",
                "2",
                "--seed",
                "7",
                "--request-timeout",
                "30",
            ],
            cwd=work,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO / ".ci"),
                "SCHEMATHESIS_HOOKS": "fuzz_hooks",
                "FUZZ_BASE_URL": server.url,
                "FUZZ_ACCESS_TOKEN": token,
            },
            check=False,
        )
        log = server.output()
    errors = [line for line in log.splitlines() if '"level": "error"' in line or "Traceback" in line]
    if errors:
        print("check-fuzz: the server logged errors while fuzzed:", *errors[:20], sep="\n", file=sys.stderr)
    return result.returncode == 0 and not errors


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="check-fuzz-") as folder:
        work = Path(folder)
        database = new_server()
        try:
            failed = [
                store
                for store, database_url in (
                    ("json", None),
                    ("postgresql", database.create_database("fuzz")),
                )
                if not fuzz(store, database_url, work / store)
            ]
        finally:
            database.destroy()
    if failed:
        print(f"check-fuzz: FAILED ({', '.join(failed)})", file=sys.stderr)
        return 1
    print("check-fuzz: passed (json, postgresql)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

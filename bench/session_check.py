"""What the token check costs on PostgreSQL: ``python bench/session_check.py``.

Starts a throwaway PostgreSQL server (harness/postgres.py) and the service under its production gunicorn
config (4 workers) on it, signs one user in, and drives ``GET /hello`` with that token (wrk on 127.0.0.1,
``--rounds`` bounded runs of ``--duration`` seconds). Prints req/s and p50/p99 of each round and their
median, then times ``--logouts`` logouts (each after a sign-in and a ``/hello`` on every worker, so that every
worker's cache holds the session): a logout answers only once every worker has confirmed it dropped the
session (docs/storage.md, exact revocation). Prints the load average before and after, so that a run on a
busy machine says so.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/session_check.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from bench.load import wrk  # noqa: E402
from harness.gunicorn import GunicornServer  # noqa: E402
from harness.postgres import new_server  # noqa: E402

FAST_ARGON2 = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--logouts", type=int, default=30, help="logouts to time (default 30)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}", flush=True)
    pg = new_server()
    try:
        url = pg.create_database("session_check")
        env = {
            **FAST_ARGON2,
            "DATABASE_URL": url,
            "SECRET_KEY": secrets.token_hex(32),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
        }
        with GunicornServer(env, workers=4).start() as server:
            credentials = {"username": "bench", "password": secrets.token_urlsafe(12)}
            requests.post(f"{server.url}/register", json=credentials, timeout=60).raise_for_status()
            signed_in = requests.post(f"{server.url}/authenticate", json=credentials, timeout=60)
            signed_in.raise_for_status()
            token_env = {"BENCH_TOKEN": signed_in.json()["access_token"]}
            runs = []
            for _ in range(args.rounds):
                run = wrk(
                    f"{server.url}/hello",
                    threads=2,
                    connections=args.connections,
                    duration=args.duration,
                    script="bearer.lua",
                    env=token_env,
                )
                figures = f"{run['rps']:.0f} req/s p50 {run['p50_ms']} ms p99 {run['p99_ms']} ms"
                print(f"/hello {figures}", flush=True)
                if run["non_2xx"]:
                    print(f"  {run['non_2xx']} answers were not 2xx", flush=True)
                runs.append(run)
            logouts = [time_logout(server.url, credentials) for _ in range(args.logouts)]
    finally:
        pg.destroy()
    print(f"median /hello {statistics.median(run['rps'] for run in runs):.0f} req/s", flush=True)
    if logouts:
        logouts.sort()
        p99 = logouts[min(len(logouts) - 1, round(0.99 * (len(logouts) - 1)))]
        print(
            f"logout ({len(logouts)}): p50 {statistics.median(logouts):.1f} ms p99 {p99:.1f} ms "
            f"max {logouts[-1]:.1f} ms",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


def time_logout(url: str, credentials: dict[str, str]) -> float:
    """Sign in, use the token on several connections (every worker, likely), log out: the logout in ms."""
    signed_in = requests.post(f"{url}/authenticate", json=credentials, timeout=60)
    signed_in.raise_for_status()
    bearer = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    for _ in range(8):  # new connections, spread over the workers
        requests.get(f"{url}/hello", headers=bearer, timeout=30).raise_for_status()
    started = time.perf_counter()
    response = requests.post(f"{url}/logout", headers=bearer, timeout=30)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 204:
        raise SystemExit(f"logout answered {response.status_code}")
    return elapsed


if __name__ == "__main__":
    sys.exit(main())

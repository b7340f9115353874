"""Benchmark the service against three references: one command, ``python bench/run.py``.

Starts the service under its production gunicorn config (``gunicorn.conf.py``, 4 workers), once per user
count, and in the same run the two reference apps (``bench/reference_app.py``: Flask + flask-jwt-extended
under gthread workers; ``bench/reference_fastapi.py``: FastAPI + PyJWT under uvicorn workers) and, beside
each service, the same app on the same store under Granian (4 workers, WSGI). Drives them with ``wrk`` on
127.0.0.1 in alternating rounds, for the JSON store and PostgreSQL (a throwaway server from ``harness/``),
the services at 10 and at 100k users side by side. Writes ``bench/results/results.json``,
``bench/results/results.md`` and ``Illustrations/benchmark.png``.

Modules: ``apps`` (what is served and how), ``load`` (wrk), ``stores`` (seeding), ``report`` (tables, targets,
plot); this one is the command line and the order of the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from bench import apps, report  # noqa: E402
from bench.load import ratio, summarise, wrk  # noqa: E402
from bench.stores import BENCH_USERNAME, password_hash, seed  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402
from src.storage import JsonFileStore, PostgresStore  # noqa: E402

RESULTS_JSON = REPO / "bench" / "results" / "results.json"
PLOT_PATH = REPO / "Illustrations" / "benchmark.png"
# Throwaway credentials of a throwaway store; the bench never touches a real one.
BENCH_PASSWORD = secrets.token_urlsafe(18)
# argon2 at its production cost makes /authenticate slow on purpose: one connection per worker, and a longer
# run for a meaningful median.
AUTHENTICATE_CONNECTIONS = 4
AUTHENTICATE_DURATION_FACTOR = 3
COMPARED_ROUTES = (("/healthz", None), ("/hello", "bearer.lua"))


def worker_args(args: argparse.Namespace) -> tuple[str, ...]:
    """gunicorn arguments for the worker class under test; none keeps gunicorn.conf.py's choice."""
    if args.worker_class == "sync":
        return ("-k", "sync")
    if args.worker_class == "gthread":
        return ("-k", "gthread", "--threads", str(args.gunicorn_threads))
    return ()


def configured_worker_class() -> str:
    """The worker class gunicorn.conf.py chooses in this environment."""
    return runpy.run_path(str(REPO / "gunicorn.conf.py")).get("worker_class", "sync")


def service_key(users: int) -> str:
    return f"service@{users}"


def granian_key(users: int) -> str:
    return f"{apps.GRANIAN.key}@{users}"


def reference_name(contender: str, users: int) -> str | None:
    """The reference a contender is to the service at ``users`` users, or None if it is none of its own.

    The reference apps serve every service; a Granian server serves only the service on its own store.
    """
    if contender.startswith("service@"):
        return None
    name, _, at = contender.partition("@")
    if at and at != str(users):
        return None
    return name


def bench_store(*, store_name, store_envs, references, args) -> tuple[list[dict], dict | None]:
    """One store at every user count: a service per count, all run in the same rounds as the references.

    Each round drives every contender (the services and the references) back to back, in the opposite order
    every other round, so that every ratio (to a reference, or of the most users to the fewest) is taken
    between runs a few seconds apart: a drift in the machine's load cancels out.
    """
    load = {"threads": args.threads, "connections": args.connections, "duration": args.duration}
    with contextlib.ExitStack() as stack:
        servers, granian_servers = {}, {}
        for users, store_env in store_envs.items():
            env = {**store_env, "SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": "info"}
            servers[users] = stack.enter_context(apps.served("src:application", env, worker_args(args)))
            # The same app, store and keys under Granian: the service's token opens it too.
            granian_servers[users] = stack.enter_context(apps.served_by_granian(env))
        apps.settle()
        idle = {users: apps.memory(server.worker_pids()) for users, server in servers.items()}
        services = {
            users: apps.Running(server, apps.sign_in(server.url, BENCH_USERNAME, BENCH_PASSWORD))
            for users, server in servers.items()
        }
        granians = {}
        for users, server in granian_servers.items():
            apps.check_token(server.url, services[users].token, ("/hello", "/id"))
            granians[granian_key(users)] = apps.Running(server, services[users].token)
        contenders = {
            **{service_key(users): running for users, running in services.items()},
            **granians,
            **references,
        }
        for running in contenders.values():  # warm up: first requests pay imports and connection set-up
            wrk(running.url + "/hello", **{**load, "duration": 1}, script="bearer.lua", env=bearer(running))

        runs = {route: {name: [] for name in contenders} for route, _ in COMPARED_ROUTES}
        runs["/id"] = {service_key(users): [] for users in services}
        for round_index in range(args.repeats):
            # Alternate the order each round, so that no app always runs first after a pause.
            order = list(contenders.items())
            if round_index % 2:
                order.reverse()
            for route, script in COMPARED_ROUTES:
                for name, running in order:
                    runs[route][name].append(
                        wrk(running.url + route, **load, script=script, env=bearer(running))
                    )
            if "/id" in args.routes:
                for users, running in services.items():
                    runs["/id"][service_key(users)].append(
                        wrk(running.url + "/id", **load, script="bearer.lua", env=bearer(running))
                    )
        if "/authenticate" in args.routes:
            credentials = {"BENCH_USERNAME": BENCH_USERNAME, "BENCH_PASSWORD": BENCH_PASSWORD}
            runs["/authenticate"] = {
                service_key(users): [
                    wrk(
                        running.url + "/authenticate",
                        threads=args.threads,
                        connections=AUTHENTICATE_CONNECTIONS,
                        duration=args.duration * AUTHENTICATE_DURATION_FACTOR,
                        script="authenticate.lua",
                        env=credentials,
                    )
                ]
                for users, running in services.items()
            }
        # wrk stops sending at its deadline, but logins already queued still run (64 MiB of argon2 each):
        # let them finish, so that the figure is what a worker keeps, not a hash in progress.
        apps.settle()
        memory = {
            users: {
                "idle": idle[users],
                "after_load": apps.memory(server.worker_pids()),
                "master": apps.memory([server.pid]),
            }
            for users, server in servers.items()
        }

    configs = [
        {
            "store": store_name,
            "users": users,
            "routes": summarised(runs, users),
            "memory": memory[users],
        }
        for users in services
    ]
    scaling = None
    if len(services) >= 2:
        low, high = min(services), max(services)
        hello = runs["/hello"]
        scaling = {
            "store": store_name,
            "low": low,
            "high": high,
            "ratio_rps": ratio(hello[service_key(high)], hello[service_key(low)]),
        }
    return configs, scaling


def summarised(runs: dict, users: int) -> dict:
    """Per route: the medians of one service's runs, and its ratio to each of its references, same rounds."""
    routes = {}
    for route, by_app in runs.items():
        service_runs = by_app.get(service_key(users))
        if not service_runs:
            continue
        entry = {"service": summarise(service_runs), "references": {}}
        for contender, reference_runs in by_app.items():
            name = reference_name(contender, users)
            if name is not None:
                entry["references"][name] = {
                    **summarise(reference_runs),
                    "ratio_rps": ratio(service_runs, reference_runs),
                }
        routes[route] = entry
    return routes


def bearer(running: apps.Running) -> dict[str, str]:
    return {"BENCH_TOKEN": running.token}


def store_env_for(store_name, users, work, pg, hashed) -> tuple[dict[str, str], float]:
    """Seed a fresh store with ``users`` users; the environment that points the service at it."""
    if store_name == "json":
        path = work / f"data-{users}.json"
        return {"DATA_FILE_PATH": str(path)}, seed(JsonFileStore(str(path)), users, hashed)
    url = pg.create_database(f"bench_{users}")
    seconds = seed(PostgresStore(url, 1, 2, 10), users, hashed)
    return {"DATABASE_URL": url, "DATA_FILE_PATH": str(work / "unused.json")}, seconds


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="flask-api-bench-"))
    # The throwaway PostgreSQL runs as the postgres user, which must reach its folder inside this one.
    os.chmod(work, 0o755)  # noqa: S103
    hashed = password_hash(BENCH_PASSWORD)
    results = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "note": args.note},
        "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration},
        "worker_class": (
            f"{configured_worker_class()} (gunicorn.conf.py)"
            if args.worker_class == "config"
            else f"{args.worker_class} (--worker-class)"
        ),
        "repeats": args.repeats,
        "references": {ref.key: ref.title for ref in (*apps.REFERENCES, apps.GRANIAN)},
        "configurations": [],
        "scaling": [],
    }
    pg = None
    references: dict[str, apps.Running] = {}
    try:
        for reference in apps.REFERENCES:
            references[reference.key] = apps.start_reference(reference, {})
        results["reference_memory"] = {
            key: {"idle": apps.memory(running.server.worker_pids())} for key, running in references.items()
        }
        for store_name in args.stores:
            if store_name == "postgresql":
                pg = PostgresServer(work / "postgres")
                pg.start()
            store_envs, seed_seconds = {}, {}
            for users in args.users:
                store_envs[users], seed_seconds[users] = store_env_for(store_name, users, work, pg, hashed)
                print(f"[{store_name} {users} users] seeded in {seed_seconds[users]}s", flush=True)
            configs, scaling = bench_store(
                store_name=store_name, store_envs=store_envs, references=references, args=args
            )
            for config in configs:
                config["seed_seconds"] = seed_seconds[config["users"]]
                results["configurations"].append(config)
                print(report.format_configuration(config), flush=True)
            if scaling is not None:
                results["scaling"].append(scaling)
            if pg is not None:
                pg.stop()
        for key, running in references.items():
            results["reference_memory"][key]["after_load"] = apps.memory(running.server.worker_pids())
    finally:
        for running in references.values():
            running.server.stop()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["targets"] = report.check_targets(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per route (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--users", type=int, nargs="+", default=[10, 100_000], help="user counts (default 10 100000)"
    )
    parser.add_argument(
        "--stores",
        nargs="+",
        choices=["json", "postgresql"],
        default=["json", "postgresql"],
        help="stores to run",
    )
    parser.add_argument(
        "--routes",
        nargs="*",
        choices=["/id", "/authenticate"],
        default=["/id", "/authenticate"],
        help="service-only routes to run besides /healthz and /hello (default both)",
    )
    parser.add_argument(
        "--worker-class",
        choices=["config", "sync", "gthread"],
        default="config",
        help="gunicorn worker class of the service (default: gunicorn.conf.py's); the references keep theirs",
    )
    parser.add_argument("--gunicorn-threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--note", default="", help="a note about the machine, written into the results")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the results here, not in bench/results/",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip Illustrations/benchmark.png")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: write the tables (and for results.json the plot) of a recorded run",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(report.markdown(results))
        if args.render.resolve() == RESULTS_JSON:
            report.plot(results, PLOT_PATH)
        return 0
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    started = time.monotonic()
    results = run(args)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    json_path = args.output or RESULTS_JSON
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    table = report.markdown(results)
    json_path.with_suffix(".md").write_text(table)
    if not args.no_plot and args.output is None:
        report.plot(results, PLOT_PATH)
    print(table)
    print(f"elapsed {results['elapsed_s']} s; results in {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

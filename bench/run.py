"""Benchmark the service against a minimal reference app: one command, ``python bench/run.py``.

Starts the service under its production gunicorn config (``gunicorn.conf.py``, 4 workers) and, in the same
run, ``bench/reference_app.py`` under the same config. Drives both with ``wrk`` on 127.0.0.1, alternating
service and reference and repeating each run to cut noise, for the JSON store and PostgreSQL (a throwaway
server from ``harness/postgres.py``), at 10 users and at 100k users (seeded in bulk with the store's
own ``create_users_bulk`` and one precomputed argon2 hash). Writes ``bench/results/results.json``,
``bench/results/results.md`` and ``Illustrations/benchmark.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from flask_jwt_extended import create_access_token
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(REPO))

# The project's own code: the stores, the password hasher, the throwaway PostgreSQL of the test suite.
from bench.reference_app import create_app as create_reference  # noqa: E402
from harness.gunicorn import GunicornServer  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402
from src.config import Settings  # noqa: E402
from src.security import Passwords  # noqa: E402
from src.storage import JsonFileStore, PostgresStore  # noqa: E402

WRK_DIR = REPO / "bench" / "wrk"
RESULTS_DIR = REPO / "bench" / "results"
PLOT_PATH = REPO / "Illustrations" / "benchmark.png"
BENCH_USERNAME = "benchuser"
# Throwaway credentials of a throwaway store; the bench never touches a real one.
BENCH_PASSWORD = secrets.token_urlsafe(18)
# argon2 at its production cost makes /authenticate slow on purpose: one connection per worker, and a wrk
# timeout long enough that queued logins are measured rather than dropped.
AUTHENTICATE_CONNECTIONS = 4
SETTLE_S = 3
AUTHENTICATE_DURATION_FACTOR = 3  # a few logins per second: a longer run for a meaningful median
WRK_TIMEOUT_S = 10
TARGET_VS_REFERENCE = 0.9
TARGET_SCALING = 0.95


# --------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------


def served(app: str, env: dict[str, str]) -> GunicornServer:
    """``gunicorn -c gunicorn.conf.py -w 4 <app>`` on 127.0.0.1, started; ``with`` stops it by its pid.

    The same launcher as the test suite's; METRICS_PORT is dropped so that /metrics stays on the app port.
    """
    return GunicornServer({**env, "METRICS_PORT": None}, workers=4, app=app).start(timeout=60)


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


# --------------------------------------------------------------------------------------------------------
# HTTP set-up and wrk
# --------------------------------------------------------------------------------------------------------


def sign_in(url: str) -> str:
    """The bench user's token from the service, after checking that it opens /hello and /id."""
    response = requests.post(
        url + "/authenticate", json={"username": BENCH_USERNAME, "password": BENCH_PASSWORD}, timeout=30
    )
    if response.status_code != 200:
        raise RuntimeError(f"/authenticate answered {response.status_code}: {response.text}")
    token = response.json()["access_token"]
    for path in ("/hello", "/id"):
        if (
            requests.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code
            != 200
        ):
            raise RuntimeError(f"{path} refused the bench token")
    return token


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    args: argparse.Namespace,
    script: str | None = None,
    env: dict[str, str] | None = None,
    *,
    connections: int | None = None,
    duration: int | None = None,
):
    """One bounded wrk run; returns req/s, p50/p99 in ms, requests and non-2xx counts."""
    connections = connections or args.connections
    duration = duration or args.duration
    command = [
        "wrk",
        f"-t{min(args.threads, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
    ]
    if script:
        command += ["-s", str(WRK_DIR / script)]
    command.append(url)
    result = subprocess.run(  # noqa: S603 - wrk with fixed arguments against 127.0.0.1
        command,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    out = result.stdout
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if not {"50", "99"} <= percentiles.keys():
        raise RuntimeError(f"wrk printed no latency distribution for {url}:\n{out}\n{result.stderr}")
    completed = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": round(_ms(percentiles["50"]), 3),
        "p99_ms": round(_ms(percentiles["99"]), 3),
        "requests": completed,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def summarise(runs: list[dict]) -> dict:
    """Median of the repeated runs (req/s, p50, p99), plus the raw runs."""
    return {
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 3),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 3),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "runs": runs,
    }


# --------------------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------------------


def password_hash(password: str) -> str:
    """One argon2 hash, made by the service's own hasher with its default (production) parameters."""
    return Passwords(Settings.from_env({})).hash(password)


def seed_rows(users: int, hashed: str):
    """``users`` rows, the bench user last; every row shares one precomputed hash."""
    for index in range(1, users):
        yield f"user{index:06d}", hashed
    yield BENCH_USERNAME, hashed


def seed(store, users: int, hashed: str) -> float:
    started = time.monotonic()
    try:
        count = store.create_users_bulk(seed_rows(users, hashed))
    finally:
        store.close()
    if count != users:
        raise RuntimeError(f"create_users_bulk stored {count} rows, expected {users}")
    return round(time.monotonic() - started, 2)


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


def bench_configuration(
    *,
    store_name: str,
    users: int,
    store_env: dict[str, str],
    reference: GunicornServer,
    ref_token: str,
    args,
) -> dict:
    """All routes of one (store, users) configuration, alternating with the reference."""
    env = {**store_env, "SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": "info"}
    with served("src:application", env) as service:
        time.sleep(SETTLE_S)  # each worker makes its argon2 dummy hash (64 MiB, transient) as it boots
        idle = memory(service.worker_pids())
        token = sign_in(service.url)
        # Warm both: first requests pay imports and connection set-up.
        wrk(service.url + "/hello", args, "bearer.lua", {"BENCH_TOKEN": token}, duration=1)
        wrk(reference.url + "/hello", args, "bearer.lua", {"BENCH_TOKEN": ref_token}, duration=1)

        runs: dict[str, dict[str, list]] = {
            route: {"service": [], "reference": []}
            for route in ("/healthz", "/hello", "/id", "/authenticate")
        }
        for _ in range(args.repeats):
            for route, script in (("/healthz", None), ("/hello", "bearer.lua")):
                runs[route]["service"].append(wrk(service.url + route, args, script, {"BENCH_TOKEN": token}))
                runs[route]["reference"].append(
                    wrk(reference.url + route, args, script, {"BENCH_TOKEN": ref_token})
                )
            runs["/id"]["service"].append(
                wrk(service.url + "/id", args, "bearer.lua", {"BENCH_TOKEN": token})
            )
        credentials = {"BENCH_USERNAME": BENCH_USERNAME, "BENCH_PASSWORD": BENCH_PASSWORD}
        runs["/authenticate"]["service"].append(
            wrk(
                service.url + "/authenticate",
                args,
                "authenticate.lua",
                credentials,
                connections=AUTHENTICATE_CONNECTIONS,
                duration=args.duration * AUTHENTICATE_DURATION_FACTOR,
            )
        )
        # wrk stops sending at its deadline, but logins already queued still run (64 MiB of argon2 each):
        # let them finish, so that the figure is what a worker keeps, not a hash in progress.
        time.sleep(SETTLE_S)
        after_load = memory(service.worker_pids())
        master = memory([service.pid])

    routes = {}
    for route, by_app in runs.items():
        entry = {"service": summarise(by_app["service"])}
        if by_app["reference"]:
            entry["reference"] = summarise(by_app["reference"])
            # Median of the ratios of adjacent runs: a drift in the machine's background load cancels out.
            pairs = zip(by_app["service"], by_app["reference"], strict=True)
            entry["ratio_rps"] = round(statistics.median(s["rps"] / r["rps"] for s, r in pairs), 3)
        routes[route] = entry
    return {
        "store": store_name,
        "users": users,
        "routes": routes,
        "memory": {"idle": idle, "after_load": after_load, "master": master},
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="flask-api-bench-"))
    # The throwaway PostgreSQL runs as the postgres user, which must reach its folder inside this one.
    os.chmod(work, 0o755)  # noqa: S103
    hashed = password_hash(BENCH_PASSWORD)
    ref_secret = secrets.token_hex(32)
    with create_reference(ref_secret).app_context():
        ref_token = create_access_token(identity="alice")

    results = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "note": args.note},
        "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration},
        "repeats": args.repeats,
        "configurations": [],
    }
    pg = None
    try:
        ref_env = {"BENCH_REFERENCE_JWT_SECRET": ref_secret}
        with served("bench.reference_app:application", ref_env) as reference:
            results["reference_memory"] = {
                "idle": memory(reference.worker_pids()),
                "master": memory([reference.pid]),
            }
            for store_name in args.stores:
                if store_name == "postgresql":
                    pg = PostgresServer(work / "postgres")
                    pg.start()
                for users in args.users:
                    if store_name == "json":
                        path = work / f"data-{users}.json"
                        seconds = seed(JsonFileStore(str(path)), users, hashed)
                        store_env = {"DATA_FILE_PATH": str(path)}
                    else:
                        url = pg.create_database(f"bench_{users}")
                        seconds = seed(PostgresStore(url, 1, 2, 10), users, hashed)
                        store_env = {"DATABASE_URL": url, "DATA_FILE_PATH": str(work / "unused.json")}
                    print(f"[{store_name} {users} users] seeded in {seconds}s", flush=True)
                    config = bench_configuration(
                        store_name=store_name,
                        users=users,
                        store_env=store_env,
                        reference=reference,
                        ref_token=ref_token,
                        args=args,
                    )
                    config["seed_seconds"] = seconds
                    results["configurations"].append(config)
                    print(format_configuration(config), flush=True)
                if pg is not None:
                    pg.stop()
            results["reference_memory"]["after_load"] = memory(reference.worker_pids())
    finally:
        if pg is not None:
            pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["targets"] = check_targets(results)
    return results


# --------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------


def format_configuration(config: dict) -> str:
    lines = []
    for route, entry in config["routes"].items():
        service = entry["service"]
        ratio = f" ({entry['ratio_rps']:.2f}x reference)" if "ratio_rps" in entry else ""
        lines.append(
            f"  {config['store']:<10} {config['users']:>6} {route:<13} {service['rps']:>9.1f} req/s "
            f"p50 {service['p50_ms']:.2f} ms p99 {service['p99_ms']:.2f} ms{ratio}"
        )
    return "\n".join(lines)


def check_targets(results: dict) -> list[dict]:
    checks = []
    by_key = {(c["store"], c["users"]): c for c in results["configurations"]}
    for config in results["configurations"]:
        for route in ("/healthz", "/hello"):
            ratio = config["routes"][route]["ratio_rps"]
            where = f"{config['store']}, {config['users']:,} users"
            checks.append(
                {
                    "target": f"{route} >= {TARGET_VS_REFERENCE}x reference ({where})",
                    "value": ratio,
                    "met": ratio >= TARGET_VS_REFERENCE,
                }
            )
    stores = sorted({c["store"] for c in results["configurations"]})
    users = sorted({c["users"] for c in results["configurations"]})
    if len(users) >= 2:
        low, high = users[0], users[-1]
        for store in stores:
            if (store, low) in by_key and (store, high) in by_key:
                ratio = round(
                    by_key[(store, high)]["routes"]["/hello"]["service"]["rps"]
                    / by_key[(store, low)]["routes"]["/hello"]["service"]["rps"],
                    3,
                )
                checks.append(
                    {
                        "target": f"/hello at {high:,} users >= {TARGET_SCALING}x at {low:,} users ({store})",
                        "value": ratio,
                        "met": ratio >= TARGET_SCALING,
                    }
                )
    return checks


def mean_memory(rows: list[dict[str, float]], pss: bool = True) -> str:
    """Mean RSS (and PSS) of some processes, as table text."""
    if not rows:
        return "n/a"
    rss = statistics.mean(row["rss_mib"] for row in rows)
    if not pss:
        return f"{rss:.0f}"
    return f"{rss:.0f} ({statistics.mean(row['pss_mib'] for row in rows):.0f})"


def markdown(results: dict) -> str:
    wrk_args = results["wrk"]
    lines = [
        f"Measured {results['started']} on {results['machine']['cpus']} CPUs, loopback, "
        f"`wrk -t{wrk_args['threads']} -c{wrk_args['connections']} -d{wrk_args['duration_s']}s`, "
        f"median of {results['repeats']} runs alternating service and reference "
        "(ratio: median over adjacent pairs)"
        + (f"; {results['machine']['note']}" if results["machine"]["note"] else "")
        + f". `/authenticate` runs once, {AUTHENTICATE_DURATION_FACTOR}x longer, with "
        f"-c{AUTHENTICATE_CONNECTIONS} (one connection per worker) and "
        "argon2 at the production defaults (time 3, 64 MiB, 4 lanes); the reference has no such route, so "
        "its figures are absolute.",
        "",
        "| store | users | route | req/s | p50 ms | p99 ms | reference req/s | reference p50 / p99 ms "
        "| ratio |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config in results["configurations"]:
        for route, entry in config["routes"].items():
            service = entry["service"]
            reference = entry.get("reference")
            if reference:
                ref_cells = (
                    f"{reference['rps']:,.0f} | {reference['p50_ms']:.2f} / {reference['p99_ms']:.2f} | "
                    f"{entry['ratio_rps']:.2f}x"
                )
            else:
                ref_cells = "none (absolute) | | "
            lines.append(
                f"| {config['store']} | {config['users']:,} | `{route}` | {service['rps']:,.0f} | "
                f"{service['p50_ms']:.2f} | {service['p99_ms']:.2f} | {ref_cells} |"
            )
    lines += ["", "| target | measured | met |", "| --- | ---: | :---: |"]
    for check in results["targets"]:
        lines.append(f"| {check['target']} | {check['value']:.2f}x | {'yes' if check['met'] else 'no'} |")
    lines += [
        "",
        "| app | store | users | per worker, idle: RSS MiB (PSS) | per worker, after the load "
        "| master RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for config in results["configurations"]:
        memory_use = config["memory"]
        lines.append(
            f"| service | {config['store']} | {config['users']:,} | {mean_memory(memory_use['idle'])} | "
            f"{mean_memory(memory_use['after_load'])} | {mean_memory(memory_use['master'], pss=False)} |"
        )
    reference = results["reference_memory"]
    lines.append(
        f"| reference | in memory | 1 | {mean_memory(reference['idle'])} | "
        f"{mean_memory(reference['after_load'])} | {mean_memory(reference['master'], pss=False)} |"
    )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Throughput of every route and the ratios to the reference, as a PNG (Agg, no display needed)."""
    configs = results["configurations"]
    labels = [f"{c['store']}\n{c['users']:,} users" for c in configs]
    fig = Figure(figsize=(13, 5.6))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})

    routes = [
        ("/healthz", "#4c72b0"),
        ("/hello", "#55a868"),
        ("/id", "#8172b2"),
        ("/authenticate", "#c44e52"),
    ]
    width = 0.8 / (len(routes) + 2)
    for index, config in enumerate(configs):
        offset = index - 0.4 + width / 2
        for route, color in routes:
            value = config["routes"][route]["service"]["rps"]
            left.bar(offset, value, width, color=color, label=route if index == 0 else None)
            offset += width
        for route, color in routes[:2]:
            value = config["routes"][route]["reference"]["rps"]
            left.bar(
                offset,
                value,
                width,
                color=color,
                hatch="//",
                alpha=0.45,
                label=f"reference {route}" if index == 0 else None,
            )
            offset += width
    left.set_yscale("log")
    left.set_xticks(range(len(configs)), labels)
    left.set_ylabel("requests per second (log scale)")
    left.set_title("Throughput, gunicorn -w 4 (hatched: reference app)")
    left.set_ylim(bottom=1)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=6)
    left.grid(axis="y", which="both", alpha=0.3)

    x = range(len(configs))
    for route, color, shift in (("/healthz", "#4c72b0", -0.18), ("/hello", "#55a868", 0.18)):
        values = [c["routes"][route]["ratio_rps"] for c in configs]
        right.bar([i + shift for i in x], values, 0.36, color=color, label=f"{route} / reference")
        for i, value in zip(x, values, strict=True):
            right.text(i + shift, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    right.axhline(
        TARGET_VS_REFERENCE,
        color="#333333",
        linestyle="--",
        linewidth=1,
        label=f"target {TARGET_VS_REFERENCE}x",
    )
    right.set_xticks(list(x), labels)
    highest = max(c["routes"][route]["ratio_rps"] for c in configs for route in ("/healthz", "/hello"))
    right.set_ylim(0, max(1.25, highest + 0.15))
    right.set_title("Service req/s as a ratio to the reference")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3)
    right.grid(axis="y", alpha=0.3)

    fig.suptitle(
        f"flask-api benchmark, {results['started']} ({results['machine']['cpus']} shared CPUs)", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per route (default 3)")
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
    parser.add_argument("--note", default="", help="a note about the machine, written into the results")
    parser.add_argument("--no-plot", action="store_true", help="skip Illustrations/benchmark.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    started = time.monotonic()
    results = run(args)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (RESULTS_DIR / "results.md").write_text(table)
    if not args.no_plot:
        plot(results, PLOT_PATH)
    print(table)
    print(f"elapsed {results['elapsed_s']} s; results in {RESULTS_DIR}, plot {PLOT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

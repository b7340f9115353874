"""What tracing costs on ``/hello``: the service without the tracing code, with it off, and with it on.

    .venv/bin/python bench/tracing.py   # writes bench/results/tracing.{json,md}; `make docs` copies them

Four gunicorn servers on 127.0.0.1 (2 event-loop workers each, JSON store, same settings) take turns under
the same short ``wrk`` load, in an order that rotates every round:

- ``baseline``: the project as it was before tracing was added (``git archive`` of the parent of the commit
  that added src/tracing.py, or ``--baseline REF``), run from a temporary folder with the same virtualenv;
- ``baseline again``: a second server of the same build, whose ratio to the first is this run's noise floor
  (on a shared machine it is not 1.000: read the other ratios against it);
- ``off``: this working tree (copied to a temporary folder, as the baseline is), tracing off (the default);
- ``on``: the same with ``OTEL_TRACES_ENABLED=true`` and a span processor like production's (batching, in a
  thread of its own) whose exporter drops the spans: the cost of making them, without a collector.

Each ratio is the median over the rounds of the ratio of two runs made in the same round, so a change in the
machine's load between rounds cancels out; the load average is recorded before and after. Then the CPU one
``/hello`` costs is measured in one process per build (``CPU_PROBE``), which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench import write_results  # noqa: E402
from bench.load import ratio, summarise, wrk  # noqa: E402
from harness.gunicorn import GunicornServer  # noqa: E402

WORKERS = 2
FAST_ARGON2 = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}
PASSWORD = secrets.token_urlsafe(18)
TRACED_APP = "bench.tracing:traced_application()"


def traced_application():
    """The service with tracing on and every span dropped by its exporter (gunicorn calls this factory)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: PLC0415

    from src import create_app  # noqa: PLC0415

    class DroppingExporter(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    app = create_app()
    app.extensions["flask_api.tracer_provider"].add_span_processor(BatchSpanProcessor(DroppingExporter()))
    return app


# The CPU a request costs in one process, run from each build's folder (its own ``src``): /hello called
# through the WSGI application with a complete environ, best of BATCHES batches, ``time.process_time`` (this
# process only, so that a busy machine inflates it far less than the req/s above). Access lines go to
# /dev/null; the result is written to the file named by the second argument.
CPU_PROBE = """
import io, json, os, sys, time
env, output = json.loads(sys.argv[1]), sys.argv[2]
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
from src import create_app
app = create_app(env)
if env.get("OTEL_TRACES_ENABLED") == "true":
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class DroppingExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS
    app.extensions["flask_api.tracer_provider"].add_span_processor(BatchSpanProcessor(DroppingExporter()))
client = app.test_client()
user = {"username": "bench", "password": env["BENCH_PASSWORD"]}
assert client.post("/register", json=user).status_code == 201
token = client.post("/authenticate", json=user).get_json()["access_token"]
base = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8888", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
    "wsgi.multiprocess": True, "wsgi.run_once": False, "HTTP_AUTHORIZATION": "Bearer " + token,
}
statuses = []
def start_response(status, headers, exc_info=None):
    statuses.append(status)
def call():
    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO()
    b"".join(app(environ, start_response))
for _ in range(200):
    call()
assert set(statuses) == {"200 OK"}, set(statuses)
best = float("inf")
for _ in range(int(env["BENCH_BATCHES"])):
    started = time.process_time()
    for _ in range(int(env["BENCH_CALLS"])):
        call()
    best = min(best, (time.process_time() - started) / int(env["BENCH_CALLS"]))
with open(output, "w") as stream:
    json.dump({"cpu_us_per_request": round(best * 1e6, 2)}, stream)
"""
CPU_BATCHES = 9
CPU_CALLS = 1000


def cpu_per_request(tree: Path, env: dict[str, str], folder: Path) -> float:
    """CPU microseconds per /hello in one process of the build in ``tree`` (CPU_PROBE)."""
    output = folder / f"cpu-{secrets.token_hex(4)}.json"
    probe_env = {
        **env,
        "BENCH_PASSWORD": PASSWORD,
        "BENCH_BATCHES": str(CPU_BATCHES),
        "BENCH_CALLS": str(CPU_CALLS),
    }
    subprocess.run(  # noqa: S603 - this interpreter with the probe written above
        [sys.executable, "-c", CPU_PROBE, json.dumps(probe_env), str(output)],
        cwd=tree,
        check=True,
        timeout=300,
        env={key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
    )
    return json.loads(output.read_text())["cpu_us_per_request"]


def git(*arguments: str) -> bytes:
    """Run git in the repository; its standard output."""
    return subprocess.run(  # noqa: S603 - git with arguments built here
        ["git", *arguments],  # noqa: S607 - the git on PATH, as a developer runs it
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout


def baseline_ref() -> str:
    """The parent of the commit that added src/tracing.py."""
    added = git("log", "--diff-filter=A", "--format=%H", "--", "src/tracing.py").decode().split()
    if not added:
        raise SystemExit("src/tracing.py is not in this repository's history: pass --baseline REF")
    return f"{added[-1]}^"


def export_tree(ref: str, folder: Path) -> str:
    """Write the files of ``ref`` into ``folder``; the commit's hash."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    with tarfile.open(fileobj=io.BytesIO(git("archive", commit))) as tar:
        tar.extractall(folder, filter="data")
    return commit


def copy_worktree(folder: Path) -> None:
    """Copy this working tree's files (tracked and new, not ignored) into ``folder``.

    The service under test runs from a fresh folder as the baseline does, so that the two differ in code only
    (not in the folder's contents nor in compiled files left from earlier runs).
    """
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def sign_in(url: str) -> str:
    """Register the bench user on this server and return its access token."""
    user = {"username": "bench", "password": PASSWORD}
    registered = requests.post(f"{url}/register", json=user, timeout=30)
    if registered.status_code != 201:
        raise RuntimeError(f"{url}/register answered {registered.status_code}: {registered.text}")
    answer = requests.post(f"{url}/authenticate", json=user, timeout=30)
    if answer.status_code != 200:
        raise RuntimeError(f"{url}/authenticate answered {answer.status_code}: {answer.text}")
    return answer.json()["access_token"]


def hello_traced(url: str, token: str) -> bool:
    """Whether /hello answers 200 with a traceparent (the tracing code runs)."""
    response = requests.get(f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"{url}/hello answered {response.status_code}")
    return "traceparent" in response.headers


def measure(args: argparse.Namespace) -> dict:
    load = {"threads": 2, "connections": args.connections, "duration": args.duration}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as scratch:
        folder = Path(scratch)
        baseline_tree = folder / "baseline"
        baseline_tree.mkdir()
        commit = export_tree(args.baseline or baseline_ref(), baseline_tree)
        current_tree = folder / "current"
        copy_worktree(current_tree)
        common = {
            "SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": None,
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
            "OTEL_TRACES_ENABLED": None,
            "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        }
        servers = {
            "baseline": GunicornServer(
                {**common, "DATA_FILE_PATH": str(folder / "baseline.json")},
                workers=WORKERS,
                root=baseline_tree,
            ),
            # The same build twice: the ratio of the two is the noise floor of this run.
            "baseline again": GunicornServer(
                {**common, "DATA_FILE_PATH": str(folder / "baseline-again.json")},
                workers=WORKERS,
                root=baseline_tree,
            ),
            "off": GunicornServer(
                {**common, "DATA_FILE_PATH": str(folder / "off.json")}, workers=WORKERS, root=current_tree
            ),
            "on": GunicornServer(
                {**common, "DATA_FILE_PATH": str(folder / "on.json"), "OTEL_TRACES_ENABLED": "true"},
                workers=WORKERS,
                app=TRACED_APP,
                root=current_tree,
            ),
        }
        try:
            tokens = {}
            for name, server in servers.items():
                server.start(timeout=120)
                tokens[name] = sign_in(server.url)
                if hello_traced(server.url, tokens[name]) != (name == "on"):
                    raise RuntimeError(f"{name}: tracing is not as this comparison needs it")
            for name, server in servers.items():  # warm up: first requests pay imports and connections
                wrk(
                    server.url + "/hello",
                    **{**load, "duration": 1},
                    script="bearer.lua",
                    env={"BENCH_TOKEN": tokens[name]},
                )
            runs: dict[str, list[dict]] = {name: [] for name in servers}
            names = list(servers)
            for round_index in range(args.rounds):
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    url = servers[name].url + "/hello"
                    runs[name].append(
                        wrk(url, **load, script="bearer.lua", env={"BENCH_TOKEN": tokens[name]})
                    )
        finally:
            for server in servers.values():
                server.close()
        # Alternating, for the same reason as the rounds above.
        cpu: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
        probe_env = {**FAST_ARGON2, "SECRET_KEY": secrets.token_hex(32)}
        for round_index in range(args.cpu_rounds):
            for name, tree, extra in (
                ("baseline", baseline_tree, {}),
                ("off", current_tree, {}),
                ("on", current_tree, {"OTEL_TRACES_ENABLED": "true"}),
            ):
                data = {
                    **probe_env,
                    **extra,
                    "DATA_FILE_PATH": str(folder / f"cpu-{name}-{round_index}.json"),
                }
                cpu[name].append(cpu_per_request(tree, data, folder))
    return {
        "started": started,
        "cpu_us_per_request": {name: min(values) for name, values in cpu.items()},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "baseline_commit": commit,
        "workers": WORKERS,
        "load": load,
        "rounds": args.rounds,
        "cpu_rounds": args.cpu_rounds,
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "results": {name: summarise(name_runs) for name, name_runs in runs.items()},
        "ratios": {
            "baseline again / baseline (noise floor)": ratio(runs["baseline again"], runs["baseline"]),
            "off / baseline": ratio(runs["off"], runs["baseline"]),
            "on / baseline": ratio(runs["on"], runs["baseline"]),
            "on / off": ratio(runs["on"], runs["off"]),
        },
    }


def markdown(results: dict) -> str:
    load = results["load"]
    before = ", ".join(f"{value:.2f}" for value in results["load_average_before"])
    after = ", ".join(f"{value:.2f}" for value in results["load_average_after"])
    lines = [
        f"Measured {results['started']} with Python {results['python']} on {results['cpus']} CPUs: "
        f"`/hello`, {results['workers']} event-loop workers per server, "
        f"`wrk -t{load['threads']} -c{load['connections']} -d{load['duration']}s`, "
        f"{results['rounds']} rounds in rotating order; baseline "
        f"{results['baseline_commit'][:12]}. Load average (1, 5, 15 min) {before} before, {after} after.",
        "",
        "| server | median req/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    titles = {
        "baseline": "before tracing was added",
        "baseline again": "before tracing was added, a second server",
        "off": "tracing off (the default)",
        "on": "tracing on, spans dropped by the exporter",
    }
    for name, title in titles.items():
        row = results["results"][name]
        lines.append(f"| {title} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    lines += ["", "| ratio (median of same-round ratios) | |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in results["ratios"].items()]
    cpu = results["cpu_us_per_request"]
    lines += [
        "",
        f"CPU per `/hello` in one process (the WSGI application called directly, best of {CPU_BATCHES} "
        f"batches of {CPU_CALLS}, lowest of {results['cpu_rounds']} alternating runs):",
        "",
        "| build | CPU µs per request | ratio to the baseline |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {titles[name]} | {cpu[name]:.1f} | {cpu[name] / cpu['baseline']:.3f} |" for name in cpu]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--baseline", help="git ref of the build without tracing (default: before it was added)"
    )
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the four servers (default 8)")
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run, at most 3 (default 2)")
    parser.add_argument("--cpu-rounds", type=int, default=5, help="in-process CPU runs per build (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "tracing.json")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 3 or not 1 <= args.rounds <= 12:
        parser.error("--duration must be 1-3 s and --rounds 1-12: the comparison stays short")
    results = measure(args)
    write_results(args.output, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

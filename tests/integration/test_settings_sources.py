"""gunicorn takes its settings from .env as the application does, and ``make run`` honours WEB_CONCURRENCY."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness import FAST_ARGON2, free_port, wait_until
from harness.command import ServingCommand, children
from harness.gunicorn import gunicorn_executable

REPO = Path(__file__).resolve().parents[2]
# Settings a developer's shell may hold; each test says what it wants.
CLEARED = dict.fromkeys(
    (
        "METRICS_PORT",
        "METRICS_ENABLED",
        "WEB_CONCURRENCY",
        "GUNICORN_BIND",
        "PORT",
        "DATABASE_URL",
        "SECRET_KEY",
    ),
)


def gunicorn_in(folder: Path, port: int, **env: str | None) -> ServingCommand:
    """The project's gunicorn.conf.py run with ``folder`` as working directory (where .env is read)."""
    return ServingCommand(
        [
            gunicorn_executable(),
            "-c",
            str(REPO / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{port}",
            "src:application",
        ],
        cwd=folder,
        env={**CLEARED, **FAST_ARGON2, "PYTHONPATH": str(REPO), **env},
    )


def test_metrics_port_in_dotenv_serves_metrics_on_that_port(tmp_path):
    app_port, metrics_port = free_port(), free_port()
    (tmp_path / ".env").write_text(f"METRICS_PORT={metrics_port}\nDATA_FILE_PATH={tmp_path / 'data.json'}\n")
    with gunicorn_in(tmp_path, app_port, WEB_CONCURRENCY="1") as server:
        server.wait_for(f"http://127.0.0.1:{app_port}/healthz")
        assert requests.get(f"http://127.0.0.1:{app_port}/metrics", timeout=10).status_code == 404
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text


def test_real_environment_wins_over_dotenv(tmp_path):
    app_port, dotenv_port, env_port = free_port(), free_port(), free_port()
    (tmp_path / ".env").write_text(f"METRICS_PORT={dotenv_port}\nWEB_CONCURRENCY=3\n")
    with gunicorn_in(
        tmp_path,
        app_port,
        METRICS_PORT=str(env_port),
        WEB_CONCURRENCY=None,
        DATA_FILE_PATH=str(tmp_path / "d"),
    ) as server:
        server.wait_for(f"http://127.0.0.1:{env_port}/metrics")
        master = server.gunicorn_master()
        # WEB_CONCURRENCY comes from .env (nothing in the environment), METRICS_PORT from the environment.
        wait_until(lambda: len(children(master)) == 3, 30, what="3 workers")
        assert "Serving /metrics on 127.0.0.1:" + str(env_port) in server.output()
        assert f":{dotenv_port}" not in server.output()


def test_make_run_starts_as_many_workers_as_web_concurrency(tmp_path):
    port = free_port()
    env = {**CLEARED, **FAST_ARGON2, "WEB_CONCURRENCY": "2", "LOG_LEVEL": "debug"}
    env["DATA_FILE_PATH"] = str(tmp_path / "data.json")
    with ServingCommand(["make", "--no-print-directory", "run", f"PORT={port}"], cwd=REPO, env=env) as run:
        run.wait_for(f"http://127.0.0.1:{port}/healthz")
        master = run.gunicorn_master()
        # gunicorn logs its settings at debug level: the number it will keep running, not a passing count.
        assert re.search(r"\bworkers: 2\b", run.output()), run.output()
        wait_until(lambda: len(children(master)) == 2, 30, what="2 workers")


# gunicorn parses WEB_CONCURRENCY itself when it is imported, before gunicorn.conf.py runs; the others are
# read by gunicorn.conf.py. Each must stop startup with the one line the application's settings give.
BAD_SERVING_SETTINGS = [
    ("WEB_CONCURRENCY", "abc", "Invalid configuration: WEB_CONCURRENCY must be an integer, got 'abc'"),
    ("WEB_CONCURRENCY", "0", "Invalid configuration: WEB_CONCURRENCY must be >= 1, got 0"),
    ("GUNICORN_THREADS", "many", "Invalid configuration: GUNICORN_THREADS must be an integer, got 'many'"),
    ("GUNICORN_TIMEOUT", "-1", "Invalid configuration: GUNICORN_TIMEOUT must be >= 1, got -1"),
]


@pytest.mark.parametrize(("name", "value", "line"), BAD_SERVING_SETTINGS)
def test_image_command_refuses_a_bad_serving_setting_with_one_line(tmp_path, name, value, line):
    # The image's ENTRYPOINT (python -m src.serve -c gunicorn.conf.py) with its CMD.
    command = [sys.executable, "-m", "src.serve", "-c", str(REPO / "gunicorn.conf.py"), "src:application"]
    env = {**os.environ, **FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json"), name: value}
    env = {key: value for key, value in env.items() if key not in CLEARED or key == name}

    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 1
    assert result.stderr == line + "\n"
    assert "Booting worker" not in result.stdout


def test_make_run_with_a_bad_web_concurrency_prints_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    env.update(FAST_ARGON2, WEB_CONCURRENCY="abc", DATA_FILE_PATH=str(tmp_path / "data.json"))

    result = subprocess.run(
        ["make", "--no-print-directory", "run", f"PORT={free_port()}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2  # make's own code when its command fails
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == ["Invalid configuration: WEB_CONCURRENCY must be an integer, got 'abc'"]

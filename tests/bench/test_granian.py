"""The benchmark's Granian reference: the service's own app under Granian, started and stopped for real."""

from __future__ import annotations

import secrets
from pathlib import Path

import requests

from bench import apps
from harness import wait_until


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_granian_reference_serves_the_service_app_on_four_workers_and_stops(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "SECRET_KEY": secrets.token_hex(32),
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "DATABASE_URL": None,
    }

    with apps.served_by_granian(env) as server:
        response = requests.get(server.url + "/healthz", timeout=10)
        workers = server.worker_pids()
        master = server.pid

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["Server"] == "granian"
    # The service's own middleware answered: its request id and security headers.
    assert len(response.headers["X-Request-Id"]) == 32
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(workers) == 4
    wait_until(lambda: not any(map(running, (master, *workers))), 15, what="Granian and its workers to exit")

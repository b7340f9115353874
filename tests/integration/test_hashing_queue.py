"""Fair shedding under a real ``gunicorn -w 4``: a burst of sign-ups larger than the hashing slots waits its
turn (ARGON2_WAIT_SECONDS) instead of being refused, and is refused with 503 and Retry-After only past that
wait; probes stay answered meanwhile. Requests go to 127.0.0.1 only, in bounded numbers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.integration.test_worker import probe_while

PASSWORD = "correct horse battery"
# One slot per worker and a hash of a few hundred milliseconds: 32 sign-ups at once on 4 workers queue.
SLOW_HASH = {
    "ARGON2_TIME_COST": "12",
    "ARGON2_MEMORY_KIB": "19456",
    "ARGON2_PARALLELISM": "1",
    "ARGON2_CONCURRENCY": "1",
}
CLIENTS = 32


def server_env(tmp_path: Path, wait_seconds: str) -> dict[str, str | None]:
    return {
        "ARGON2_QUEUE_LENGTH": str(CLIENTS),
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        "DATABASE_URL": None,
        "REGISTER_MAX_PER_ADDRESS": "0",
        "ARGON2_WAIT_SECONDS": wait_seconds,
        **SLOW_HASH,
    }


def sign_up_at_once(url: str) -> list[requests.Response]:
    """CLIENTS registrations of distinct names, released together."""
    start = threading.Barrier(CLIENTS)

    def register(number: int) -> requests.Response:
        start.wait()
        body = {"username": f"user{number:02d}", "password": PASSWORD}
        return requests.post(f"{url}/register", json=body, timeout=120)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(register, range(CLIENTS)))


def test_a_burst_of_sign_ups_beyond_the_slots_all_get_201_while_probes_stay_answered(
    gunicorn_server, tmp_path
):
    server = gunicorn_server(server_env(tmp_path, wait_seconds="60"))
    busy = threading.Event()
    busy.set()
    with ThreadPoolExecutor(max_workers=1) as probing:
        probes = probing.submit(probe_while, server.port, busy)
        try:
            responses = sign_up_at_once(server.url)
        finally:
            busy.clear()
        failed_probes = probes.result()

    assert [response.status_code for response in responses] == [201] * CLIENTS
    assert failed_probes == []


def test_past_the_wait_a_sign_up_gets_503_with_retry_after(gunicorn_server, tmp_path):
    server = gunicorn_server(server_env(tmp_path, wait_seconds="0"))

    responses = sign_up_at_once(server.url)

    shed = [response for response in responses if response.status_code == 503]
    assert shed
    assert {response.headers["Content-Type"] for response in shed} == {"application/problem+json"}
    assert {response.headers["Retry-After"] for response in shed} == {"1"}
    assert {response.status_code for response in responses} == {201, 503}

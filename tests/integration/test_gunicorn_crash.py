"""SIGKILL of the whole ``gunicorn -w 4`` (master and workers at once) while registrations are being written.

Whatever instant the kill lands on, the store must hold every registration the service acknowledged (201),
under the id it answered, and the JSON file must still parse; a restarted server then serves those users.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests

from harness import wait_until
from src.storage import JsonFileStore, PostgresStore

PASSWORD = "correct horse battery"
WRITERS = 8
MAX_ATTEMPTS_PER_WRITER = 200


@pytest.fixture
def store_env(store_env: dict[str, str | None]) -> dict[str, str | None]:
    if store_env["DATABASE_URL"] is None:
        store_env["SECRET_KEY"] = None  # the JSON store's generated key, shared by the workers
    # Storage under concurrency, not its limits: every registration from loopback is let through and hashed.
    limits_off = {"AUTH_MAX_FAILURES": "0", "REGISTER_MAX_PER_ADDRESS": "0", "ARGON2_CONCURRENCY": "64"}
    return {**store_env, **limits_off}


class Writers:
    """Threads registering fresh names until stopped (bounded); keeps every acknowledged name and id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(WRITERS)]

    def run(self, writer: int) -> None:
        for attempt in range(MAX_ATTEMPTS_PER_WRITER):
            if self.stop.is_set():
                return
            name = f"w{writer}-{attempt}"
            try:
                response = requests.post(
                    f"{self.url}/register", json={"username": name, "password": PASSWORD}, timeout=30
                )
            except requests.RequestException:
                return  # the server is gone
            if response.status_code == 201:
                with self.lock:
                    self.acknowledged[name] = response.json()["id"]

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def test_sigkill_during_writes_keeps_every_acknowledged_user(gunicorn_server, store_env):
    server = gunicorn_server(store_env)
    writers = Writers(server.url)
    for thread in writers.threads:
        thread.start()
    wait_until(lambda: writers.count() >= 60, timeout=60, interval=0.02, what="60 acknowledged registrations")

    server.kill_all()  # master and workers in the same instant, mid-write
    writers.stop.set()
    for thread in writers.threads:
        thread.join(timeout=60)

    acknowledged = dict(writers.acknowledged)
    assert len(acknowledged) >= 60
    if store_env.get("DATABASE_URL"):
        store = PostgresStore(store_env["DATABASE_URL"], min_size=1, max_size=2, timeout=5)
    else:
        json.loads(Path(store_env["DATA_FILE_PATH"]).read_bytes())  # still a complete JSON document
        store = JsonFileStore(store_env["DATA_FILE_PATH"])
    with store:
        lost = {
            name
            for name, user_id in acknowledged.items()
            if getattr(store.find_by_username(name), "id", None) != user_id
        }
    assert not lost, f"acknowledged but lost: {sorted(lost)[:10]}"

    restarted = gunicorn_server(store_env)
    name = next(iter(acknowledged))
    response = requests.post(
        f"{restarted.url}/authenticate", json={"username": name, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200

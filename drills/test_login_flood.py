"""A login flood: 16 clients sending failed logins for new usernames from ever new addresses for 20 s.

Every guess costs a real argon2 hash at the production cost (the addresses defeat the per-address limits, as a
botnet would). Meanwhile the liveness probe must never fail (p99 < 1 s) and a signed-in user's /hello must
succeed at least 99 % of the time.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time

import pytest
import requests

from harness.gunicorn import GunicornServer

from .conftest import Prober, register_and_login, run_before_variants

FLOOD_CLIENTS = 16
FLOOD_SECONDS = 20


def flood(url: str, token: str) -> dict[str, object]:
    """Run the flood against ``url``; figures of the probes, the /hello client and the flood itself."""
    deadline = time.monotonic() + FLOOD_SECONDS
    statuses: collections.Counter[str] = collections.Counter()
    hello: collections.Counter[str] = collections.Counter()
    numbers = itertools.count()
    lock = threading.Lock()

    def guesser() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                n = next(numbers)
                address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
                try:
                    status = session.post(
                        f"{url}/authenticate",
                        json={"username": f"nobody-{n}", "password": "wrong password"},
                        headers={"X-Forwarded-For": address},
                        timeout=30,
                    ).status_code
                    key = str(status)
                except requests.RequestException as exc:
                    key = type(exc).__name__
                with lock:
                    statuses[key] += 1

    def greeter() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                try:
                    response = session.get(
                        f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=2
                    )
                    hello["ok" if response.status_code == 200 else f"HTTP {response.status_code}"] += 1
                except requests.RequestException as exc:
                    hello[type(exc).__name__] += 1
                time.sleep(0.05)

    probe = Prober(f"{url}/healthz")
    threads = [threading.Thread(target=guesser) for _ in range(FLOOD_CLIENTS)] + [
        threading.Thread(target=greeter)
    ]
    probe.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=FLOOD_SECONDS + 40)
    probe.stop()
    total = sum(hello.values())
    return {
        "healthz": probe.figures(),
        "hello_ok_percent": round(100 * hello["ok"] / total, 2) if total else 0.0,
        "hello_requests": total,
        "flood_statuses": dict(sorted(statuses.items())),
        "password_checks_per_second": round(statuses["401"] / FLOOD_SECONDS, 1),
    }


def serve(tmp_path, **env: str) -> GunicornServer:
    return GunicornServer(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "LOG_LEVEL": "warning",
            "TRUSTED_PROXY_COUNT": "1",
            "TRUSTED_PROXIES": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": None,
            **env,
        },
        workers=4,
    )


def test_login_flood_keeps_probes_and_signed_in_users_served(tmp_path, results):
    with serve(tmp_path).start() as server:
        figures = flood(server.url, register_and_login(server.url))
    results["login_flood"] = {
        "gunicorn": "4 event-loop workers, hashing on 8 threads each, 1 hash at a time per worker",
        **figures,
    }

    assert figures["healthz"]["failed"] == 0
    assert figures["healthz"]["p99_ms"] < 1000
    assert figures["hello_ok_percent"] >= 99.0


@pytest.mark.skipif(not run_before_variants(), reason="DRILLS_BEFORE=1 runs the before variants")
def test_login_flood_before_sync_workers(tmp_path, results):
    with serve(tmp_path, GUNICORN_THREADS="1").start() as server:
        figures = flood(server.url, register_and_login(server.url))
    results["login_flood_before"] = {"gunicorn": "4 sync workers", **figures}

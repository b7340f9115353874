"""Attack drills against a real gunicorn (gunicorn.conf.py) and Debian's nginx, on loopback only.

Every drill is bounded in time and count, asserts the thresholds of docs/drills.md, and writes its figures to
``build/figures/attacks.json`` (DRILLS_RESULTS to write elsewhere), which ``make docs`` copies into the docs.
``DRILLS_BEFORE=1`` also runs the "before" variants (sync workers, no proxy) and records their figures without
asserting on them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

RESULTS_PATH = Path(
    os.environ.get("DRILLS_RESULTS")
    or Path(__file__).resolve().parents[1] / "build" / "figures" / "attacks.json"
)
PASSWORD = "correct horse battery"


def run_before_variants() -> bool:
    """Whether the "before" variants run too (DRILLS_BEFORE=1)."""
    return os.environ.get("DRILLS_BEFORE", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, object]]:
    """Figures by drill; merged into the results file at the end (drills not run keep their last figures)."""
    figures: dict[str, object] = {}
    yield figures
    if not figures:
        return
    previous = json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else {}
    previous.update(figures)
    previous["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (fraction 0.99 for p99)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Prober(threading.Thread):
    """GET ``url`` every ``interval`` s with a ``timeout`` like the kubelet's; latencies and failures."""

    def __init__(self, url: str, interval: float = 0.25, timeout: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.url, self.interval, self.timeout = url, interval, timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self._stop_event.is_set():
                started = time.monotonic()
                try:
                    # A new connection per probe, as the kubelet makes.
                    status = session.get(
                        self.url, timeout=self.timeout, headers={"Connection": "close"}
                    ).status_code
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                except requests.RequestException as exc:
                    self.failures.append(type(exc).__name__)
                elapsed = time.monotonic() - started
                self.latencies.append(elapsed)
                self._stop_event.wait(max(0.0, self.interval - elapsed))

    def stop(self) -> None:
        """Stop probing and wait for the last probe."""
        self._stop_event.set()
        self.join(timeout=self.timeout + 5)

    def figures(self) -> dict[str, float | int]:
        """Probes sent and failed, median, p99 and max latency in ms."""
        return {
            "probes": len(self.latencies),
            "failed": len(self.failures),
            "median_ms": round(statistics.median(self.latencies) * 1000, 1),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 1),
            "max_ms": round(max(self.latencies) * 1000, 1),
        }


def register(url: str, username: str) -> requests.Response:
    """POST /register for ``username`` with the drills' password."""
    return requests.post(f"{url}/register", json={"username": username, "password": PASSWORD}, timeout=30)


def assert_replaced_store_refuses_old_token(results: dict, name: str, url: str, token: str) -> None:
    """In a store created afresh, a new user gets id 1 and the old store's token for id 1 gets 401."""
    mallory = register(url, "mallory").json()
    old_token = requests.get(f"{url}/hello", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    results[name] = {"new_user_id": mallory["id"], "old_token_hello": old_token.status_code}

    assert mallory["id"] == 1
    assert_problem(old_token, 401)


def register_and_login(url: str, username: str = "alice") -> str:
    """Register ``username`` and return an access token for it."""
    credentials = {"username": username, "password": PASSWORD}
    assert register(url, username).status_code == 201
    response = requests.post(f"{url}/authenticate", json=credentials, timeout=30)
    assert response.status_code == 200
    return response.json()["access_token"]


def assert_problem(response: requests.Response, status: int) -> None:
    """``response`` has ``status`` and an RFC 9457 body with that status."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == status

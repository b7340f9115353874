"""200 worker restarts: the metric files of dead workers are folded, and a scrape costs what it did fresh."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import requests

from harness import free_port, wait_until
from harness.gunicorn import GunicornServer

RESTARTS = 200


def scrape_ms(url: str, count: int = 60) -> float:
    """Median time of ``count`` scrapes, in ms."""
    timings = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            assert session.get(url, timeout=10).status_code == 200
            timings.append(time.perf_counter() - started)
    return round(statistics.median(timings) * 1000, 2)


def test_scrape_time_stays_flat_over_200_worker_restarts(tmp_path, results):
    metrics_dir = tmp_path / "metrics"
    metrics_port = free_port()
    env = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "LOG_LEVEL": "info",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_PORT": str(metrics_port),
        # Every worker exits after one request: each request below is one restart.
        "GUNICORN_MAX_REQUESTS": "1",
        "GUNICORN_MAX_REQUESTS_JITTER": "0",
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
    }
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    # --preload: workers fork from a master that has loaded the application, so 200 restarts take seconds.
    with GunicornServer(env, workers=4, extra_args=["--preload"]).start(timeout=60) as server:
        for _ in range(4):  # every worker has served once (and been replaced): its files exist
            requests.get(f"{server.url}/healthz", timeout=10)
        fresh_ms = scrape_ms(metrics_url)

        def boots() -> int:
            return server.output().count("Booting worker")

        started = time.monotonic()
        target = boots() + RESTARTS
        deadline = started + 240

        def client() -> None:
            # One client per worker keeps each of them busy, so restarts follow one another at once.
            while boots() < target and time.monotonic() < deadline:
                try:
                    requests.get(f"{server.url}/healthz", timeout=10)
                except requests.RequestException:
                    time.sleep(0.05)  # a worker between two lives

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=300)
        restart_seconds = round(time.monotonic() - started, 1)
        wait_until(lambda: len(server.worker_pids()) == 4, 30, what="four live workers")
        after_ms = scrape_ms(metrics_url)
        files = sorted(path.name for path in Path(metrics_dir).glob("*.db"))
        total = requests.get(metrics_url, timeout=10).text
        booted = boots()
    requests_counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in total.splitlines()
        if line.startswith("http_requests_total{") and 'route="/healthz"' in line
    )
    results["metric_files"] = {
        "worker_restarts": RESTARTS,
        "restart_seconds": restart_seconds,
        "scrape_ms_fresh": fresh_ms,
        "scrape_ms_after_restarts": after_ms,
        "files_after_restarts": len(files),
    }

    assert booted >= target
    assert after_ms <= 2 * fresh_ms
    # The live workers' files and one archive per type, whatever the number of restarts.
    assert len(files) <= 4 * 2 + 2
    # Folding lost no request: every /healthz answered by a dead worker is still counted.
    assert requests_counted >= RESTARTS

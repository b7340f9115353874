"""A real Prometheus scrapes a real ``gunicorn -w 4``: the request counter adds up every worker's requests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector

from harness import free_port, wait_until
from harness.gunicorn import GunicornServer
from src.observability import HTTP_REQUESTS

PROMETHEUS = "/usr/bin/prometheus"
REQUESTS = 200
# Not /healthz: GunicornServer.start polls it, which would add its own requests to the count.
ROUTE = "/readyz"
# The exposed name of the counter (prometheus_client appends _total to counters).
pytestmark = pytest.mark.system

COUNTER = f"{HTTP_REQUESTS.describe()[0].name}_total"


def prometheus_binary() -> str:
    binary = PROMETHEUS if os.access(PROMETHEUS, os.X_OK) else shutil.which("prometheus")
    if binary:
        return binary
    pytest.fail("Prometheus not installed: `make test-system` installs it (apt-get install prometheus)")


@pytest.fixture
def service(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "METRICS_PORT")}
    env.update(
        DATA_FILE_PATH=str(tmp_path / "data.json"),
        SECRET_KEY=secrets.token_hex(32),
        METRICS_ENABLED="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    with GunicornServer(env, workers=4).start(timeout=60) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path, service):
    """Prometheus on a free loopback port, scraping the service every second; stopped by its pid."""
    binary = prometheus_binary()
    target = service.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    # JSON is valid YAML: no YAML library needed to write the configuration.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "flask-api",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
        + "\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout=60, interval=0.2, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def query(prometheus: str, promql: str) -> float | None:
    """The single value of an instant query, or None when it has no sample."""
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sums_the_request_counter_over_all_workers(service, prometheus, tmp_path):
    def scraped_up() -> bool:
        return query(prometheus, 'up{job="flask-api"}') == 1

    wait_until(scraped_up, timeout=60, interval=0.5, what="Prometheus to scrape the service")

    # Concurrent clients so that every sync worker takes a share; each request opens its own connection.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: requests.get(f"{service.url}{ROUTE}", timeout=10).status_code, range(REQUESTS))
        )
    assert statuses == [200] * REQUESTS

    promql = f'sum({COUNTER}{{job="flask-api",route="{ROUTE}",method="GET"}})'
    wait_until(
        lambda: query(prometheus, promql) == REQUESTS, timeout=60, interval=0.5, what=f"{promql} = 200"
    )
    assert query(prometheus, promql) == 200

    # The requests really were spread: several workers' own sample files hold a share of them.
    shares = [share for share in worker_shares(tmp_path / "metrics") if share]
    assert sum(shares) == REQUESTS
    assert len(shares) > 1, "every request went to one worker: the sum proves nothing"


def worker_shares(metrics_dir: Path) -> list[float]:
    """The route's request count in each worker's own counter file (counter_<pid>.db)."""
    shares = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        share = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == COUNTER and sample.labels.get("route") == ROUTE:
                    share += sample.value
        shares.append(share)
    return shares

"""``gunicorn -w 4`` as the image serves it: metrics over all workers, JSON logs, graceful SIGTERM."""

from __future__ import annotations

import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, wait_until

USERNAME = "serving-user"
PASSWORD = "Serving-Passw0rd-42"
WORKERS = 4
SPREAD_REQUESTS = 400


def service_env(tmp_path: Path, **overrides: str | None) -> dict[str, str | None]:
    """The JSON store in tmp_path, the cheapest argon2 the configuration accepts, serving defaults."""
    env: dict[str, str | None] = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "DATABASE_URL": None,
        "SECRET_KEY": None,  # generated beside the data file: a secret the logs must never show
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        "REGISTER_MAX_PER_ADDRESS": "0",
        "ARGON2_CONCURRENCY": "64",
        "METRICS_ENABLED": None,
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        "LOG_LEVEL": None,
        "WEB_CONCURRENCY": None,
        "GUNICORN_BIND": None,
        "GUNICORN_GRACEFUL_TIMEOUT": None,
    }
    env.update(overrides)
    return env


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics scrape as {(sample name, sorted labels): value}."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def route_value(samples, name: str, route: str, status: str = "200", method: str = "GET") -> float | None:
    labels = tuple(sorted({"route": route, "method": method, "status": status}.items()))
    return samples.get((name, labels))


def worker_shares(metrics_dir: Path, route: str) -> dict[str, float]:
    """Requests to ``route`` counted in each worker's own file (counter_<pid>.db), by pid."""
    shares = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == "http_requests_total" and sample.labels["route"] == route:
                    shares[path.stem.removeprefix("counter_")] = sample.value
    return shares


def get_many(url: str, count: int, clients: int = 8) -> list[int]:
    """``count`` GETs from ``clients`` concurrent clients (each request on its own connection)."""
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda _: requests.get(url, timeout=10).status_code, range(count)))


def hold_every_worker(server, path: str = "/healthz") -> list[socket.socket]:
    """Half-send one request per worker and wait until the workers have accepted all of them.

    A sync worker (``GUNICORN_THREADS=1``) accepts one connection and then blocks reading it, so when all of
    them hold one, every worker is booted and busy, one request each. ``finish`` sends the rest.
    """
    port = int(urlsplit(server.url).port)
    connections = []
    for _ in range(server.workers):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        connections.append(connection)
    server.wait_until_workers_hold(server.workers)
    return connections


def finish(connections: list[socket.socket]) -> list[int]:
    """Complete the half-sent requests; their status codes."""
    statuses = []
    for connection in connections:
        with connection:
            connection.sendall(b"Connection: close\r\n\r\n")
            statuses.append(int(connection.makefile("rb").readline().split()[1]))
    return statuses


def register(base_url: str, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(
        f"{base_url}/register", json={"username": username, "password": password}, timeout=60
    )


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def test_every_scrape_counts_the_requests_of_all_four_workers(gunicorn_server, tmp_path):
    metrics_dir = tmp_path / "metrics"
    server = gunicorn_server(
        service_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), GUNICORN_THREADS="1"),
        workers=WORKERS,
    )
    # One /readyz held by each worker: all four booted, and each has served at least one of the requests.
    assert finish(hold_every_worker(server, "/readyz")) == [200] * WORKERS
    assert get_many(f"{server.url}/readyz", SPREAD_REQUESTS - WORKERS) == [200] * (SPREAD_REQUESTS - WORKERS)

    # Sync workers answer one request at a time, so concurrent scrapes land on different workers; the
    # sequential ones go wherever the kernel hands them. Every one of them must see all 400.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        concurrent = list(pool.map(lambda _: scrape(f"{server.url}/metrics"), range(WORKERS)))
    sequential = [scrape(f"{server.url}/metrics") for _ in range(4)]
    for samples in concurrent + sequential:
        assert route_value(samples, "http_requests_total", "/readyz") == SPREAD_REQUESTS
        assert route_value(samples, "http_request_duration_seconds_count", "/readyz") == SPREAD_REQUESTS
        assert route_value(samples, "http_request_duration_seconds_bucket", "/readyz") is None  # has "le"

    # The sum is a proof because the requests were spread: each worker's own file holds a share.
    shares = worker_shares(metrics_dir, "/readyz")
    assert sum(shares.values()) == SPREAD_REQUESTS
    assert len(shares) == WORKERS, f"requests per worker pid: {shares}"


def test_without_a_configured_folder_the_master_makes_one_that_every_worker_shares(gunicorn_server, tmp_path):
    # PROMETHEUS_MULTIPROC_DIR unset; sync workers, so that each held connection is in a different worker.
    server = gunicorn_server(service_env(tmp_path, GUNICORN_THREADS="1"), workers=WORKERS)

    # One /readyz held by each of the four workers, then one scrape: it must count all four.
    assert finish(hold_every_worker(server, "/readyz")) == [200] * WORKERS
    assert route_value(scrape(f"{server.url}/metrics"), "http_requests_total", "/readyz") == 4
    assert "Prometheus multiprocess folder: " in server.output()


def test_metrics_port_moves_metrics_to_the_master(gunicorn_server, tmp_path):
    metrics_port = free_port()
    server = gunicorn_server(service_env(tmp_path, METRICS_PORT=str(metrics_port)), workers=WORKERS)

    assert get_many(f"{server.url}/readyz", 40) == [200] * 40
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 404
    for _ in range(3):
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert route_value(samples, "http_requests_total", "/readyz") == 40

    assert server.stop() == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)


# ---------------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------------


def secrets_beside_the_data(data_dir: Path) -> list[str]:
    """Password hashes in the store and the content of any other file there (the generated SECRET_KEY)."""
    found = []
    for path in data_dir.iterdir():
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.name == "data.json":
            found += re.findall(r"\$argon2id\$[^\"]+", text)
        elif len(text.strip()) >= 16:
            found.append(text.strip())
    return found


def test_logs_are_json_lines_with_request_ids_and_no_secrets(gunicorn_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = gunicorn_server(service_env(data_dir), workers=WORKERS)
    url = server.url

    registered = register(url, USERNAME)
    assert registered.status_code == 201, registered.text
    authenticated = requests.post(
        f"{url}/authenticate", json={"username": USERNAME, "password": PASSWORD}, timeout=30
    )
    assert authenticated.status_code == 200, authenticated.text
    token = authenticated.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with_id = requests.get(f"{url}/id", headers={**bearer, "X-Request-ID": "client-trace-0001"}, timeout=10)
    with_bad_id = requests.get(
        f"{url}/hello", headers={**bearer, "X-Request-ID": "not a sane id"}, timeout=10
    )
    wrong_password = requests.post(
        f"{url}/authenticate", json={"username": USERNAME, "password": "Wrong-Passw0rd-99"}, timeout=30
    )
    unknown = requests.get(f"{url}/no/such/path", timeout=10)
    responses = [registered, authenticated, with_id, with_bad_id, wrong_password, unknown]
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 401, 404]
    assert with_id.headers["X-Request-ID"] == "client-trace-0001"
    assert re.fullmatch(r"[0-9a-f]{32}", with_bad_id.headers["X-Request-ID"])

    assert server.stop() == 0
    output = server.output()

    records = []
    for number, line in enumerate(output.splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
    assert any(record.get("logger") == "gunicorn.error" for record in records)

    access = {record["request_id"]: record for record in records if record.get("logger") == "access"}
    for response in responses:
        record = access[response.headers["X-Request-ID"]]
        assert record["status"] == response.status_code
        assert record["method"] == response.request.method
        assert record["path"] == urlsplit(response.url).path
        assert isinstance(record["duration_ms"], float)
        assert 0 < record["duration_ms"] < 60_000
    assert access["client-trace-0001"]["route"] == "/id"
    assert access[unknown.headers["X-Request-ID"]]["route"] == "unmatched"

    for secret in [PASSWORD, "Wrong-Passw0rd-99", token, "Bearer ", *secrets_beside_the_data(data_dir)]:
        assert secret not in output


# ---------------------------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["8", "1"], ids=["event-loop-workers", "sync-workers"])
def test_readyz_answers_503_once_sigterm_reaches_the_worker(gunicorn_server, tmp_path, threads):
    server = gunicorn_server(service_env(tmp_path, GUNICORN_THREADS=threads), workers=WORKERS)
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200

    # How to see readiness during the drain from outside: requests that reached a worker just before the
    # signal. Four half-sent requests are held by the workers (a sync worker takes one, a threaded worker
    # may take several). SIGTERM goes to the master, which closes its listener and signals the workers;
    # each worker runs its SIGTERM handler (gunicorn.conf.py: start_draining) as soon as it reads again, so
    # the request it finishes after the signal sees the draining state, as a kubelet probe would.
    connections = hold_every_worker(server, "/readyz")
    server.begin_graceful_stop()  # SIGTERM; the master closes its listener and signals every worker
    if threads != "1":
        # An event loop may read a held request before it runs its signal handler: wait until every worker
        # has taken the signal (it logs "Worker shutting down..." once draining has started).
        wait_until(
            lambda: server.output().count("Worker shutting down") >= WORKERS,
            timeout=30,
            what="every worker to take SIGTERM",
        )
    else:
        # A sync worker blocked reading runs its handler the moment the signal arrives, but the master relays
        # SIGTERM from its own loop: wait until it has (it logs "Handling signal: term", then signals the
        # workers), else a request finished first is answered before the worker knows.
        wait_until(
            lambda: "Handling signal: term" in server.output(),
            timeout=30,
            what="the master to relay SIGTERM",
        )
    statuses = finish(connections)

    assert statuses == [503] * WORKERS
    assert server.stop(timeout=30) == 0


# ---------------------------------------------------------------------------------------------------------
# One line format (src/logs.py, docs/serving.md#logs)
# ---------------------------------------------------------------------------------------------------------
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_gunicorns_lines_and_the_applications_have_the_same_fields(gunicorn_server, tmp_path):
    (tmp_path / "data.json").write_text("[corrupt")  # /readyz fails and the application logs why
    server = gunicorn_server(service_env(tmp_path), workers=1)
    (worker,) = server.worker_pids()
    not_ready = requests.get(f"{server.url}/readyz", headers={"X-Request-ID": "fields-0001"}, timeout=10)
    assert not_ready.status_code == 503
    assert server.stop() == 0
    records = [json.loads(line) for line in server.output().splitlines()]

    booting = next(r for r in records if r.get("message") == f"Booting worker with pid: {worker}")
    assert list(booting) == ["time", "level", "logger", "message", "pid"]
    assert TIME.fullmatch(booting["time"])
    assert (booting["level"], booting["logger"], booting["pid"]) == ("info", "gunicorn.error", worker)

    (warning,) = (r for r in records if r["logger"] == "src.routes.health")
    assert list(warning) == ["time", "level", "logger", "message", "pid", "request_id"]
    assert TIME.fullmatch(warning["time"])
    assert (warning["level"], warning["pid"], warning["request_id"]) == ("warning", worker, "fields-0001")
    assert warning["message"].startswith("not ready: ")

    (access,) = (r for r in records if r["logger"] == "access" and r["request_id"] == "fields-0001")
    assert list(access) == [
        "time",
        "level",
        "logger",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "request_id",
        "remote_addr",
    ]
    assert TIME.fullmatch(access["time"])
    assert (access["level"], access["route"], access["status"]) == ("error", "/readyz", 503)

"""Request ids, JSON lines and metrics of src/observability.py, on the application built by ``create_app``."""

import json
import logging
import multiprocessing
import os
import re

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from src import create_app, logs, observability
from tests.conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEY

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def make_app(tmp_path):
    """Factory: the real application from ``create_app`` on a JSON store in tmp_path, plus one crashing route.

    No route of the service fails on purpose, so ``/boom`` is added to show what an unhandled error gives.
    """
    apps = []

    def make(metrics_enabled: bool = True, metrics_port: int | None = None, log_level: str = "info") -> Flask:
        env = {
            **FAST_ARGON2,
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "SECRET_KEY": TEST_SECRET_KEY,
            "METRICS_ENABLED": "true" if metrics_enabled else "false",
            "LOG_LEVEL": log_level,
        }
        if metrics_port is not None:
            env["METRICS_PORT"] = str(metrics_port)
        app = create_app(env)

        def boom():
            raise RuntimeError("boom")

        app.add_url_rule("/boom", "boom", boom)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["user_store"].close()


def stdout_lines(capfd) -> list[dict]:
    """Every line written to stdout since the last call, each parsed as JSON."""
    out = capfd.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("logger") == "access"]


def counted(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


pytestmark = pytest.mark.usefixtures("root_logger_restored")


@pytest.mark.parametrize(
    "value", ["abc-123", "0af7651916cd43dd8448eb211c80319c", "trace:span.1_2", "x" * 128]
)
def test_a_sane_request_id_is_echoed_and_logged(make_app, capfd, value):
    client = make_app().test_client()
    capfd.readouterr()

    response = client.get("/readyz", environ_overrides={"HTTP_X_REQUEST_ID": value})

    (line,) = access_lines(stdout_lines(capfd))
    assert response.headers["X-Request-ID"] == line["request_id"] == value


# Put in the WSGI environ as gunicorn's parser delivers header values (latin-1 text), past the test
# client's own header checks: the middleware's validation is what is tested.
@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "has space", 'quote"d', "new\nline", "caf\u00e9", "{}", "a/b", "nul\x00", "abc-123 "],
)
def test_any_other_request_id_is_replaced_by_a_new_one_in_the_response_and_the_log(make_app, capfd, value):
    client = make_app().test_client()
    capfd.readouterr()

    response = client.get("/readyz", environ_overrides={"HTTP_X_REQUEST_ID": value})

    (line,) = access_lines(stdout_lines(capfd))
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])
    assert line["request_id"] == response.headers["X-Request-ID"]


def test_response_echoes_the_callers_request_id(make_app):
    response = make_app().test_client().get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_response_carries_a_generated_request_id_when_none_or_invalid_is_sent(make_app):
    client = make_app().test_client()
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz", headers={"X-Request-ID": "bad id"}).headers["X-Request-ID"]
    assert HEX_ID.fullmatch(first)
    assert HEX_ID.fullmatch(second)
    assert first != second


def test_error_responses_carry_the_request_id(make_app):
    client = make_app().test_client()
    assert client.get("/nowhere", headers={"X-Request-ID": "r-404"}).headers["X-Request-ID"] == "r-404"
    assert client.post("/healthz", headers={"X-Request-ID": "r-405"}).headers["X-Request-ID"] == "r-405"
    assert client.get("/boom", headers={"X-Request-ID": "r-500"}).headers["X-Request-ID"] == "r-500"


def test_one_json_access_line_per_request_with_route_template(make_app, capfd):
    client = make_app().test_client()
    capfd.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": "line-1"})
    (line,) = access_lines(stdout_lines(capfd))
    assert line["method"] == "GET"
    assert line["route"] == "/healthz"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["request_id"] == response.headers["X-Request-ID"] == "line-1"
    assert line["level"] == "info"
    assert isinstance(line["duration_ms"], float)
    assert line["remote_addr"] == "127.0.0.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


class SteppedClock:
    """The clock of src/observability.py: perf_counter steps by ``step`` s per reading, time stays fixed."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.readings = 0

    def perf_counter(self) -> float:
        self.readings += 1
        return 1_000.0 + self.readings * self.step

    def time(self) -> float:
        return 1_796_000_000.0


def test_a_request_of_a_quarter_second_is_logged_as_250_ms_and_observed_as_0_25_s(
    make_app, capfd, monkeypatch
):
    client = make_app().test_client()
    labels = {"route": "/readyz", "method": "GET", "status": "200"}
    sum_before = REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) or 0.0
    under_half_second = REGISTRY.get_sample_value(
        "http_request_duration_seconds_bucket", {**labels, "le": "0.5"}
    )
    capfd.readouterr()
    # The request starts and ends on two readings of the clock, 0.25 s apart (exact in binary).
    monkeypatch.setattr(observability, "time", SteppedClock(0.25))

    client.get("/readyz")

    monkeypatch.undo()
    (line,) = access_lines(stdout_lines(capfd))
    assert line["duration_ms"] == 250.0
    assert line["time"] == "2026-11-30T00:53:20.000Z"
    assert REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) - sum_before == 0.25
    assert (
        REGISTRY.get_sample_value("http_request_duration_seconds_bucket", {**labels, "le": "0.5"})
        == (under_half_second or 0.0) + 1
    )


def test_unmatched_paths_and_unknown_methods_get_fixed_labels(make_app, capfd):
    client = make_app().test_client()
    capfd.readouterr()
    client.get("/secret-looking/path/123")
    client.open("/healthz", method="BREW")
    first, second = access_lines(stdout_lines(capfd))
    assert (first["route"], first["status"]) == ("unmatched", 404)
    assert (second["method"], second["status"]) == ("OTHER", 405)


def test_application_log_records_are_json_with_the_request_id(make_app, tmp_path, capfd):
    client = make_app(log_level="debug").test_client()
    (tmp_path / "data.json").write_text("[corrupt")  # the store fails: src/errors.py logs why, at debug
    capfd.readouterr()
    response = client.post(
        "/register", json={"username": "alice", "password": PASSWORD}, headers={"X-Request-ID": "app-log"}
    )
    records = [line for line in stdout_lines(capfd) if line.get("logger") == "src.errors"]
    assert response.status_code == 503
    assert [(r["level"], r["request_id"], r["message"].split(":")[0]) for r in records] == [
        ("debug", "app-log", "store unavailable")
    ]


def test_an_application_record_has_exactly_the_documented_fields(make_app, capfd):
    client = make_app().test_client()
    logging.getLogger("src.fields").warning("outside a request")
    with client.application.test_request_context(environ_overrides={"flask_api.request_id": "in-request"}):
        logging.getLogger("src.fields").warning("inside a request")
    outside, inside = (line for line in stdout_lines(capfd) if line.get("logger") == "src.fields")

    assert list(outside) == ["time", "level", "logger", "message", "pid"]
    assert list(inside) == ["time", "level", "logger", "message", "pid", "request_id"]
    assert (outside["level"], outside["message"], outside["pid"]) == (
        "warning",
        "outside a request",
        os.getpid(),
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", outside["time"])
    assert inside["request_id"] == "in-request"


def test_unhandled_errors_are_logged_as_one_json_line_with_the_traceback(make_app, capfd):
    client = make_app().test_client()
    capfd.readouterr()
    assert client.get("/boom", headers={"X-Request-ID": "r-boom"}).status_code == 500
    error, access = (line for line in stdout_lines(capfd) if line["level"] == "error")
    assert error["request_id"] == "r-boom"
    assert "RuntimeError: boom" in error["exc_info"]
    assert (access["logger"], access["status"], access["request_id"]) == ("access", 500, "r-boom")


def test_no_password_token_or_authorization_header_reaches_the_logs(make_app, capfd):
    client = make_app().test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})
    capfd.readouterr()
    response = client.post(
        "/authenticate?password=query-secret",
        json={"username": "alice", "password": PASSWORD},
        headers={"Authorization": "Bearer header-secret-token"},
    )
    out = capfd.readouterr().out
    token = response.get_json()["access_token"]
    for secret in (PASSWORD, "query-secret", "header-secret-token", "Bearer", token):
        assert secret not in out
    assert '"path": "/authenticate"' in out


def test_formatter_masks_tokens_and_hashes_in_messages(make_app, capfd):
    logger = logging.getLogger("observed.redaction")
    make_app()
    capfd.readouterr()
    logger.warning(
        "got Bearer abc.def and %s and %s",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
    )
    (record,) = stdout_lines(capfd)
    assert record["message"] == "got [REDACTED] and [REDACTED] and [REDACTED]"
    assert "request_id" not in record


def test_warning_level_turns_access_lines_off(make_app, capfd):
    client = make_app(log_level="warning").test_client()
    capfd.readouterr()
    client.get("/healthz")
    assert access_lines(stdout_lines(capfd)) == []


def test_requests_are_counted_and_timed_by_route_method_and_status(make_app):
    client = make_app().test_client()
    before = counted("/healthz", "GET", "200")
    for _ in range(3):
        client.get("/healthz")
    assert counted("/healthz", "GET", "200") == before + 3
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    assert REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) >= 3


def test_metrics_route_serves_the_prometheus_text_format(make_app):
    client = make_app().test_client()
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in response.text
    assert "http_request_duration_seconds_bucket{" in response.text


def test_metrics_port_moves_metrics_off_the_application(make_app, tmp_path):
    client = make_app(metrics_port=9102).test_client()
    assert client.get("/metrics").status_code == 404


def test_disabled_metrics_are_neither_served_nor_counted(make_app):
    client = make_app(metrics_enabled=False).test_client()
    before = counted("/healthz", "GET", "200")
    client.get("/healthz")
    assert client.get("/metrics").status_code == 404
    assert counted("/healthz", "GET", "200") == before


def count_in_a_worker(route: str, times: int) -> None:
    """In a fresh (spawned) process, as a gunicorn worker would: count ``times`` requests to ``route``."""
    from src import observability

    for _ in range(times):
        observability.HTTP_REQUESTS.labels(route, "GET", "200").inc()


def test_the_multiprocess_registry_sums_the_requests_of_every_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spawn = multiprocessing.get_context("spawn")
    for times in (3, 4):
        worker = spawn.Process(target=count_in_a_worker, args=("/summed", times))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0

    registry = observability.metrics_registry()

    labels = {"route": "/summed", "method": "GET", "status": "200"}
    assert registry.get_sample_value("http_requests_total", labels) == 7.0


def test_without_a_multiprocess_folder_the_registry_is_this_process(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    observability.HTTP_REQUESTS.labels("/here", "GET", "200").inc()  # the series exists from here on

    registry = observability.metrics_registry()
    labels = {"route": "/here", "method": "GET", "status": "200"}
    before = registry.get_sample_value("http_requests_total", labels)

    observability.HTTP_REQUESTS.labels("/here", "GET", "200").inc()

    assert registry.get_sample_value("http_requests_total", labels) == before + 1


def test_current_request_id_is_none_outside_a_request():
    assert logs.current_request_id() is None


def test_a_second_app_replaces_the_json_handler_instead_of_adding_one(make_app):
    make_app()
    make_app()
    assert sum(getattr(h, "_flask_api_json", False) for h in logging.getLogger().handlers) == 1


def test_a_failing_stdout_does_not_fail_the_request(make_app, monkeypatch):
    def broken_write(fd, data):
        raise OSError(5, "Input/output error")

    client = make_app().test_client()
    monkeypatch.setattr(observability.os, "write", broken_write)
    monkeypatch.setattr(logging, "raiseExceptions", False)
    assert client.get("/healthz").status_code == 200


def test_a_dead_workers_metric_files_are_folded_into_one_archive_and_still_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spawn = multiprocessing.get_context("spawn")
    pids = []
    for times in (3, 4, 5):
        worker = spawn.Process(target=count_in_a_worker, args=("/folded", times))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
        pids.append(worker.pid)

    from src.metrics_files import fold_dead_worker

    for pid in pids[:2]:
        assert fold_dead_worker(str(tmp_path), pid) == 1  # its counter file (it observed no latency)

    files = sorted(path.name for path in tmp_path.glob("*.db"))
    assert files == sorted(["counter_archive.db", f"counter_{pids[2]}.db"])
    labels = {"route": "/folded", "method": "GET", "status": "200"}
    assert observability.metrics_registry().get_sample_value("http_requests_total", labels) == 12.0

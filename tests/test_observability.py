"""Request ids, JSON lines and metrics of src/observability.py, in-process on a small Flask app."""

import json
import logging
import re
from types import SimpleNamespace

import pytest
from flask import Flask, jsonify
from prometheus_client import REGISTRY

from src import observability

HEX_ID = re.compile(r"[0-9a-f]{32}")


def make_app(metrics_enabled=True, metrics_port=None, log_level="info") -> Flask:
    """A Flask app with two routes, one that fails, and observability attached."""
    app = Flask("observed")
    app.config["SETTINGS"] = SimpleNamespace(
        metrics_enabled=metrics_enabled, metrics_port=metrics_port, log_level=log_level
    )
    observability.init_app(app)

    @app.get("/items/<int:item_id>")
    def item(item_id):
        app.logger.info("item %s asked", item_id)
        return jsonify(id=item_id)

    @app.post("/login")
    def login():
        return jsonify(access_token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    return app


def stdout_lines(capfd) -> list[dict]:
    """Every line written to stdout since the last call, each parsed as JSON."""
    out = capfd.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("logger") == "access"]


def counted(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "value", ["abc-123", "0af7651916cd43dd8448eb211c80319c", "trace:span.1_2", "x" * 128]
)
def test_request_id_from_keeps_sane_ids(value):
    assert observability.request_id_from(value) == value


@pytest.mark.parametrize(
    "value", [None, "", "x" * 129, "has space", 'quote"d', "new\nline", "caf\u00e9", "{}"]
)
def test_request_id_from_replaces_anything_else(value):
    assert HEX_ID.fullmatch(observability.request_id_from(value))


def test_response_echoes_the_callers_request_id():
    response = make_app().test_client().get("/items/1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_response_carries_a_generated_request_id_when_none_or_invalid_is_sent():
    client = make_app().test_client()
    first = client.get("/items/1").headers["X-Request-ID"]
    second = client.get("/items/1", headers={"X-Request-ID": "bad id"}).headers["X-Request-ID"]
    assert HEX_ID.fullmatch(first)
    assert HEX_ID.fullmatch(second)
    assert first != second


def test_error_responses_carry_the_request_id():
    client = make_app().test_client()
    assert client.get("/nowhere", headers={"X-Request-ID": "r-404"}).headers["X-Request-ID"] == "r-404"
    assert client.post("/items/1", headers={"X-Request-ID": "r-405"}).headers["X-Request-ID"] == "r-405"
    assert client.get("/boom", headers={"X-Request-ID": "r-500"}).headers["X-Request-ID"] == "r-500"


def test_one_json_access_line_per_request_with_route_template(capfd):
    client = make_app().test_client()
    capfd.readouterr()
    response = client.get("/items/7", headers={"X-Request-ID": "line-1"})
    (line,) = access_lines(stdout_lines(capfd))
    assert line["method"] == "GET"
    assert line["route"] == "/items/<int:item_id>"
    assert line["path"] == "/items/7"
    assert line["status"] == 200
    assert line["request_id"] == response.headers["X-Request-ID"] == "line-1"
    assert line["level"] == "info"
    assert isinstance(line["duration_ms"], float)
    assert line["remote_addr"] == "127.0.0.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_unmatched_paths_and_unknown_methods_get_fixed_labels(capfd):
    client = make_app().test_client()
    capfd.readouterr()
    client.get("/secret-looking/path/123")
    client.open("/items/1", method="BREW")
    first, second = access_lines(stdout_lines(capfd))
    assert (first["route"], first["status"]) == ("unmatched", 404)
    assert (second["method"], second["status"]) == ("OTHER", 405)


def test_application_log_records_are_json_with_the_request_id(capfd):
    client = make_app().test_client()
    capfd.readouterr()
    client.get("/items/3", headers={"X-Request-ID": "app-log"})
    records = [line for line in stdout_lines(capfd) if line.get("logger") == "observed"]
    assert records == [
        {"time": records[0]["time"], "level": "info", "logger": "observed", "message": "item 3 asked",
         "request_id": "app-log"}
    ]  # fmt: skip


def test_unhandled_errors_are_logged_as_one_json_line_with_the_traceback(capfd):
    client = make_app().test_client()
    capfd.readouterr()
    assert client.get("/boom", headers={"X-Request-ID": "r-boom"}).status_code == 500
    error, access = (line for line in stdout_lines(capfd) if line["level"] == "error")
    assert error["request_id"] == "r-boom"
    assert "RuntimeError: boom" in error["exc_info"]
    assert (access["logger"], access["status"], access["request_id"]) == ("access", 500, "r-boom")


def test_no_password_token_or_authorization_header_reaches_the_logs(capfd):
    client = make_app().test_client()
    capfd.readouterr()
    client.post(
        "/login?password=query-secret",
        json={"username": "alice", "password": "correct horse battery"},
        headers={"Authorization": "Bearer header-secret-token"},
    )
    out = capfd.readouterr().out
    for secret in ("correct horse", "query-secret", "header-secret-token", "Bearer", "eyJ"):
        assert secret not in out
    assert '"path": "/login"' in out


def test_formatter_masks_tokens_and_hashes_in_messages(capfd):
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


def test_warning_level_turns_access_lines_off(capfd):
    client = make_app(log_level="warning").test_client()
    capfd.readouterr()
    client.get("/items/1")
    assert access_lines(stdout_lines(capfd)) == []


def test_requests_are_counted_and_timed_by_route_method_and_status():
    client = make_app().test_client()
    before = counted("/items/<int:item_id>", "GET", "200")
    for item_id in range(3):
        client.get(f"/items/{item_id}")
    assert counted("/items/<int:item_id>", "GET", "200") == before + 3
    labels = {"route": "/items/<int:item_id>", "method": "GET", "status": "200"}
    assert REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) >= 3


def test_metrics_route_serves_the_prometheus_text_format():
    client = make_app().test_client()
    client.get("/items/1")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/items/<int:item_id>",status="200"}' in response.text
    assert "http_request_duration_seconds_bucket{" in response.text


def test_metrics_port_moves_metrics_off_the_application(tmp_path):
    client = make_app(metrics_port=9102).test_client()
    assert client.get("/metrics").status_code == 404


def test_disabled_metrics_are_neither_served_nor_counted():
    client = make_app(metrics_enabled=False).test_client()
    before = counted("/items/<int:item_id>", "GET", "200")
    client.get("/items/1")
    assert client.get("/metrics").status_code == 404
    assert counted("/items/<int:item_id>", "GET", "200") == before


def test_multiprocess_folder_selects_the_aggregating_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert observability.metrics_registry() is not REGISTRY
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert observability.metrics_registry() is REGISTRY


def test_current_request_id_is_none_outside_a_request():
    assert observability.current_request_id() is None


def test_unknown_log_level_falls_back_to_info(capfd):
    client = make_app(log_level="chatty").test_client()
    capfd.readouterr()
    client.get("/items/1")
    assert len(access_lines(stdout_lines(capfd))) == 1


def test_a_second_app_replaces_the_json_handler_instead_of_adding_one():
    make_app()
    make_app()
    assert sum(getattr(h, "_flask_api_json", False) for h in logging.getLogger().handlers) == 1


def test_a_failing_stdout_does_not_fail_the_request(monkeypatch):
    def broken_write(fd, data):
        raise OSError(5, "Input/output error")

    client = make_app().test_client()
    monkeypatch.setattr(observability.os, "write", broken_write)
    monkeypatch.setattr(logging, "raiseExceptions", False)
    assert client.get("/items/1").status_code == 200

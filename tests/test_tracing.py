"""OpenTelemetry traces (src/tracing.py): the caller's traceparent continued, returned, logged; query spans.

Spans are read from the SDK's InMemorySpanExporter, added to the provider the application builds. Each test
that needs a store runs on both (``app_env``): a JSON file and a fresh database on the real PostgreSQL server.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from harness.gunicorn import REPO_ROOT
from src.config import ConfigError, Settings
from src.worker import WsgiOnLoop
from tests.conftest import AuthActions
from tests.test_worker import exchange, request

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
RESPONSE_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]")


pytestmark = pytest.mark.usefixtures("root_logger_restored")


class Traced:
    """A traced application, its test client and the spans it has ended."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.auth = AuthActions(self.client)
        self.exporter = InMemorySpanExporter()
        app.extensions["flask_api.tracer_provider"].add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind == SpanKind.SERVER]


@pytest.fixture
def traced(make_app: Callable[..., Flask]) -> Traced:
    return Traced(make_app(OTEL_TRACES_ENABLED="true", SECRET_KEY="t" * 40))


def access_lines(capfd) -> list[dict]:
    out = capfd.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "access"]


def test_server_span_continues_the_callers_traceparent(traced):
    token = traced.auth.token()
    traced.exporter.clear()

    response = traced.client.get(
        "/hello", headers={"Authorization": f"Bearer {token}", "traceparent": TRACEPARENT}
    )

    assert response.status_code == 200
    (span,) = traced.server_spans()
    assert span.name == "GET /hello"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN_ID
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.route"] == "/hello"


def test_response_traceparent_names_the_server_span(traced):
    response = traced.client.get("/healthz", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 200
    returned = RESPONSE_TRACEPARENT.fullmatch(response.headers["traceparent"])
    assert returned is not None, response.headers["traceparent"]
    assert returned.group(1) == TRACE_ID
    assert returned.group(2) != PARENT_SPAN_ID
    (span,) = traced.server_spans()
    assert returned.group(2) == f"{span.context.span_id:016x}"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT_SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{PARENT_SPAN_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID.upper()}-{PARENT_SPAN_ID}-01",  # upper-case hex
        f"00-{TRACE_ID}-{PARENT_SPAN_ID}",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(traced, value):
    response = traced.client.get("/healthz", headers={"traceparent": value})

    assert response.status_code == 200
    returned = RESPONSE_TRACEPARENT.fullmatch(response.headers["traceparent"])
    assert returned is not None
    assert returned.group(1) not in (TRACE_ID, "0" * 32)
    (span,) = traced.server_spans()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" == returned.group(1)


def test_without_a_traceparent_every_request_gets_its_own_trace(traced):
    first = traced.client.get("/healthz").headers["traceparent"]
    second = traced.client.get("/healthz").headers["traceparent"]

    assert RESPONSE_TRACEPARENT.fullmatch(first)
    assert first.split("-")[1] != second.split("-")[1]


def test_the_access_line_carries_the_trace_id(traced, capfd):
    capfd.readouterr()
    traced.client.get("/healthz", headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-0001"})
    traced.client.get("/no/such/path", headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-0002"})

    lines = {line["request_id"]: line for line in access_lines(capfd)}
    assert lines["traced-0001"]["trace_id"] == TRACE_ID
    assert (lines["traced-0002"]["status"], lines["traced-0002"]["trace_id"]) == (404, TRACE_ID)


def test_an_application_log_line_of_the_request_carries_the_trace_id(traced, capfd):
    def shout():
        logging.getLogger("src.routes.test").warning("inside the request")
        return {"ok": True}

    traced.app.add_url_rule("/shout", "shout", shout)
    capfd.readouterr()
    traced.client.get("/shout", headers={"traceparent": TRACEPARENT})

    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (warning,) = (line for line in lines if line.get("message") == "inside the request")
    assert warning["trace_id"] == TRACE_ID


def test_an_unknown_method_does_not_name_the_span(traced):
    response = traced.client.open("/healthz", method="BREW", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 405
    (span,) = traced.server_spans()
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"


def test_a_5xx_answer_marks_the_server_span_as_an_error(traced):
    def boom():
        raise RuntimeError("boom")

    traced.app.add_url_rule("/boom", "boom", boom)
    response = traced.client.get("/boom", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 500
    (span,) = traced.server_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500


@pytest.mark.parametrize("app_env", ["postgresql"], indirect=True)
def test_a_database_query_is_a_child_span_of_the_request(traced):
    response = traced.auth.register("carol", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 201
    (server,) = traced.server_spans()
    queries = [span for span in traced.spans() if span.kind == SpanKind.CLIENT]
    assert queries, [span.name for span in traced.spans()]
    for query in queries:
        assert query.context.trace_id == server.context.trace_id
        assert query.parent.span_id == server.context.span_id
        assert query.attributes["db.system"] == "postgresql"
    statements = " ".join(str(query.attributes.get("db.statement")) for query in queries)
    assert "INSERT" in statements.upper()
    assert "correct horse" not in statements  # the query's text, never its parameters


@pytest.mark.parametrize("app_env", ["postgresql"], indirect=True)
def test_a_request_moved_from_the_event_loop_to_the_pool_has_one_server_span(traced):
    token = traced.auth.token()
    traced.exporter.clear()
    # /hello starts on the loop; its session is not cached yet, so the token check's query meets WouldWait and
    # the request runs again on the pool.
    adapter = WsgiOnLoop.for_application(traced.app, threads=1)
    raw = request("/hello", headers=(f"Authorization: Bearer {token}", f"traceparent: {TRACEPARENT}"))

    (reply,), _session = exchange(adapter, raw)

    assert reply.status == 200
    (span,) = traced.server_spans()
    assert span.name == "GET /hello"
    assert span.status.status_code != StatusCode.ERROR
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    returned = reply.header("traceparent")
    assert returned == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert [q.parent.span_id for q in traced.spans() if q.kind == SpanKind.CLIENT] != []


# ----------------------------------------------------------------------------------------------- tracing off


def test_tracing_is_off_by_default(make_app, capfd):
    app = make_app()
    capfd.readouterr()
    response = app.test_client().get(
        "/healthz", headers={"traceparent": TRACEPARENT, "X-Request-ID": "off-1"}
    )

    assert app.config["SETTINGS"].otel_traces_enabled is False
    assert response.status_code == 200
    assert "traceparent" not in response.headers
    (line,) = access_lines(capfd)
    assert "trace_id" not in line


def test_opentelemetry_is_loaded_only_once_tracing_is_on(tmp_path):
    script = (
        "import sys\n"
        "from src import create_app\n"
        f"env = {{'DATA_FILE_PATH': {str(tmp_path / 'data.json')!r}}}\n"
        "assert create_app(env).test_client().get('/healthz').status_code == 200\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
        "response = create_app({**env, 'OTEL_TRACES_ENABLED': 'true'}).test_client().get('/healthz')\n"
        "print(response.headers.get('traceparent', 'no traceparent')[:2])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )

    printed = [line for line in result.stdout.splitlines() if not line.startswith("{")]  # not the log lines
    assert printed == ["[]", "00"]


# ------------------------------------------------------------------------------------------------- settings


def test_tracing_settings_default_to_off_and_the_service_name():
    settings = Settings.from_env({})

    assert (
        settings.otel_traces_enabled,
        settings.otel_exporter_otlp_endpoint,
        settings.otel_service_name,
    ) == (
        False,
        None,
        "flask-api",
    )


def test_tracing_settings_are_read():
    settings = Settings.from_env(
        {
            "OTEL_TRACES_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.observability:4318/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "api-eu",
        }
    )

    assert settings.otel_traces_enabled is True
    assert settings.otel_exporter_otlp_endpoint == "http://collector.observability:4318"
    assert settings.otel_service_name == "api-eu"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_ENABLED": "maybe"}, "OTEL_TRACES_ENABLED must be true or false, got 'maybe'"),
        (
            {"OTEL_TRACES_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL like http://collector:4318, "
            "got 'collector:4318'",
        ),
        (
            {"OTEL_TRACES_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://"},
            "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL like http://collector:4318, "
            "got 'http://'",
        ),
        (
            {"OTEL_TRACES_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw@collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT must not hold credentials (user:password@)",
        ),
        (
            {
                "OTEL_TRACES_ENABLED": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (the exporter shipped), got 'grpc'",
        ),
    ],
)
def test_a_bad_tracing_setting_stops_startup_naming_it(env, message):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)

    assert str(raised.value) == message


def test_an_endpoint_is_ignored_while_tracing_is_off():
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"})

    assert (settings.otel_traces_enabled, settings.otel_exporter_otlp_endpoint) == (False, None)

"""Traces under a real gunicorn: traceparent in and out, the trace id logged, spans exported over OTLP.

The collector is a stand-in on 127.0.0.1 that accepts OTLP/HTTP protobuf (``POST /v1/traces``) and keeps
what it is sent; the service reaches it through OTEL_EXPORTER_OTLP_ENDPOINT as it would a real collector.
Each test runs on the JSON store and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import wait_until

PASSWORD = "correct horse battery"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER in OTLP
CLIENT = 3


class Collector:
    """Receives OTLP/HTTP protobuf exports; ``spans()`` are (resource attributes, span) pairs."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                collector.paths.append(self.path)
                collector.requests.append(message)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict, object]]:
        found = []
        for message in list(self.requests):
            for resource_spans in message.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


@pytest.fixture(params=["json", "postgresql"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "DATABASE_URL": None,
        "SECRET_KEY": os.urandom(32).hex(),
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        "LOG_LEVEL": None,
    }
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    return env


def test_a_traceparent_round_trips_through_gunicorn_and_its_spans_reach_the_collector(
    gunicorn_server, collector, store_env
):
    env = {
        **store_env,
        "OTEL_TRACES_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": "flask-api-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's export interval, in ms: spans leave within the test
    }
    server = gunicorn_server(env, workers=2)
    traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    registered = requests.post(
        f"{server.url}/register",
        json={"username": "dora", "password": PASSWORD},
        headers=traceparent,
        timeout=30,
    )
    token = requests.post(
        f"{server.url}/authenticate", json={"username": "dora", "password": PASSWORD}, timeout=30
    ).json()["access_token"]
    hello = requests.get(
        f"{server.url}/hello",
        headers={**traceparent, "Authorization": f"Bearer {token}", "X-Request-ID": "traced-hello"},
        timeout=10,
    )

    assert (registered.status_code, hello.status_code) == (201, 200)
    version, trace_id, span_id, _flags = hello.headers["traceparent"].split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    assert span_id not in (PARENT_SPAN_ID, "0" * 16)

    def server_spans() -> list:
        return [(r, s) for r, s in collector.spans() if s.kind == SERVER and s.trace_id.hex() == TRACE_ID]

    wait_until(lambda: len(server_spans()) >= 2, timeout=30, what="the two server spans at the collector")
    assert set(collector.paths) == {"/v1/traces"}
    by_name = {span.name: (resource, span) for resource, span in server_spans()}
    resource, hello_span = by_name["GET /hello"]
    assert resource["service.name"] == "flask-api-under-test"
    assert hello_span.span_id.hex() == span_id
    assert hello_span.parent_span_id.hex() == PARENT_SPAN_ID
    _, register_span = by_name["POST /register"]
    if store_env["DATABASE_URL"]:
        wait_until(
            lambda: any(
                s.kind == CLIENT and s.parent_span_id == register_span.span_id for _, s in collector.spans()
            ),
            timeout=30,
            what="the registration's query span",
        )

    assert server.stop() == 0
    assert len(server_spans()) == 2  # one per request, even for one that moved from the loop to the pool
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    (access,) = (r for r in records if r.get("logger") == "access" and r["request_id"] == "traced-hello")
    assert access["trace_id"] == TRACE_ID


def test_spans_still_in_the_batch_are_sent_when_gunicorn_stops(gunicorn_server, collector, tmp_path):
    env = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "DATABASE_URL": None,
        "METRICS_PORT": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        "OTEL_TRACES_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # ten minutes: only the flush at exit can send the span
    }
    server = gunicorn_server(env, workers=1)
    response = requests.get(
        f"{server.url}/healthz", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}, timeout=10
    )
    assert response.status_code == 200

    assert server.stop() == 0  # SIGTERM, as a rollout sends it
    names = [span.name for _, span in collector.spans() if span.trace_id.hex() == TRACE_ID]
    assert names == ["GET /healthz"]

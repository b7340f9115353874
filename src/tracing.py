"""OpenTelemetry traces, opt-in (``OTEL_TRACES_ENABLED``): a server span per request, a child span per query.

Imported only when tracing is on (``create_app``): with it off, no OpenTelemetry module is loaded and no
middleware runs; the one per-request trace of this feature is the access line's look for a trace id.

``RequestTracing`` is a thin WSGI middleware rather than opentelemetry-instrumentation-flask: a request the
event-loop worker starts on its loop may stop with ``WouldWait`` before its first query and run again on the
thread pool (src/worker.py). Flask's instrumentation would end and export an errored span for the first
attempt; here that span is never ended, so never exported, and the run on the pool makes the request's one
server span. The span is current while Flask runs, on the loop or on a pool thread alike, so a psycopg
query (opentelemetry-instrumentation-psycopg, on every pooled connection) becomes its child.

The caller's W3C ``traceparent`` is the parent when it is valid; anything else starts a new trace. Every
response carries a ``traceparent`` naming the server span, so a client can find its trace; the trace id is
also in the access line and in the application's log lines of the request (``trace_id``).
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Flask
from opentelemetry import context, trace
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .config import Settings
from .lifecycle import WouldWait
from .logs import TRACE_ID_ENVIRON
from .observability import KNOWN_METHODS, ROUTE_ENVIRON
from .storage import PostgresStore

TRACEPARENT_HEADER = "traceparent"
TRACER_PROVIDER = "flask_api.tracer_provider"
OTHER_METHOD = "_OTHER"
_PROPAGATOR = TraceContextTextMapPropagator()


class _EnvironGetter(Getter[dict[str, Any]]):
    """Reads ``traceparent`` and ``tracestate`` from a WSGI environ (``HTTP_TRACEPARENT``...)."""

    def get(self, carrier: dict[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: dict[str, Any]) -> list[str]:
        return []


_ENVIRON = _EnvironGetter()


class RequestTracing:
    """WSGI middleware: one server span per request, child of the caller's ``traceparent`` when valid."""

    def __init__(self, wsgi_app: Any, tracer: trace.Tracer) -> None:
        self.wsgi_app = wsgi_app
        self.tracer = tracer

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        parent = _PROPAGATOR.extract(environ, getter=_ENVIRON)
        method = name = environ.get("REQUEST_METHOD", "")
        if method not in KNOWN_METHODS:
            # As the semantic conventions ask: a client must not choose span names.
            method, name = OTHER_METHOD, "HTTP"
        span = self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": environ.get("PATH_INFO", "")},
        )
        ids = span.get_span_context()
        trace_id = f"{ids.trace_id:032x}"
        environ[TRACE_ID_ENVIRON] = trace_id
        traceparent = f"00-{trace_id}-{ids.span_id:016x}-{ids.trace_flags:02x}"
        status = [0]

        def start_response_with_trace(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None):
            status[0] = int(status_line[:3])
            headers.append((TRACEPARENT_HEADER, traceparent))
            return start_response(status_line, headers, exc_info)

        token = context.attach(trace.set_span_in_context(span, parent))
        dropped = False
        try:
            return self.wsgi_app(environ, start_response_with_trace)
        except WouldWait:
            # Run again on the pool, traced there: this attempt's span is dropped, never ended nor exported.
            dropped = True
            raise
        except Exception as exc:  # only with PROPAGATE_EXCEPTIONS: Flask answers 500 itself otherwise
            span.record_exception(exc)
            status[0] = status[0] or 500
            raise
        finally:
            context.detach(token)
            if not dropped:
                self.end(span, name, environ.get(ROUTE_ENVIRON), status[0])

    @staticmethod
    def end(span: trace.Span, name: str, route: str | None, status: int) -> None:
        """Name the span after its route (``GET /hello``), record the status, end it."""
        if route is not None:
            span.update_name(f"{name} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()


def tracer_provider(settings: Settings) -> TracerProvider:
    """This application's provider: the service's name, and the OTLP exporter when an endpoint is set."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    if settings.otel_exporter_otlp_endpoint is not None:
        # Imported here: the exporter (protobuf, requests) loads only when spans leave the process.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        exporter = OTLPSpanExporter(endpoint=f"{settings.otel_exporter_otlp_endpoint}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def init_app(app: Flask, settings: Settings) -> TracerProvider:
    """Trace every request of ``app`` and every query of its PostgreSQL store; the provider is returned and
    kept in ``app.extensions`` (tests add their own span processor to it)."""
    provider = tracer_provider(settings)
    app.extensions[TRACER_PROVIDER] = provider
    store = app.extensions.get("user_store")
    if isinstance(store, PostgresStore):

        def instrument(connection: psycopg.Connection) -> None:
            PsycopgInstrumentor.instrument_connection(connection, tracer_provider=provider)

        store.configure_connection = instrument
    tracer = provider.get_tracer(__name__)
    app.wsgi_app = RequestTracing(app.wsgi_app, tracer)  # type: ignore[method-assign]
    return provider

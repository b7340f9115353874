"""Request ids, JSON logs and Prometheus metrics.

One thin WSGI middleware does the per-request work: it takes the caller's X-Request-ID (when it is sane) or
makes one, echoes it on the response, and once the response is ready counts the request, observes its latency
and writes one JSON access line with a single ``os.write``. It runs for every request, so it stays small:
no ``logging`` machinery, no header copies, label children cached.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by the master (gunicorn.conf.py) before the workers import
this module, so prometheus_client keeps every worker's samples in shared files and /metrics adds them up.
"""

import logging
import os
import re
import time
from bisect import bisect_left
from json.encoder import encode_basestring_ascii as json_string

from flask import Flask, Response
from flask.logging import default_handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from .apidoc import ok, operation
from .lifecycle import WouldWait
from .logs import REQUEST_ID_ENVIRON, TRACE_ID_ENVIRON, JsonFormatter, StdoutLineHandler, utc_timestamp
from .metrics_files import FoldingCollector
from .routes.waits import waits_on_nothing

REQUEST_ID_HEADER = "X-Request-ID"
ROUTE_ENVIRON = "flask_api.route"
# Label for requests that matched no route: the raw path would let any client create label values.
UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "OTHER"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Ids from load balancers and tracers (UUIDs, hex trace ids, "trace:span") fit; anything else is replaced.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time spent producing the response, by route template, method and status.",
    ("route", "method", "status"),
    buckets=LATENCY_BUCKETS,
)


class _Outcome:
    """What is fixed for one (route, method, status): its metric values and the constant parts of its line.

    The metric values are prometheus_client's own (in multiprocess mode, slots in this worker's mmap files),
    reached once here rather than through ``Counter.inc`` and ``Histogram.observe`` on every request.
    """

    __slots__ = ("buckets", "count", "line_after_path", "line_after_time", "sum")

    def __init__(self, route: str, method: str, status: int) -> None:
        labels = (route, method, str(status))
        histogram = HTTP_REQUEST_DURATION.labels(*labels)
        self.count = HTTP_REQUESTS.labels(*labels)._value
        self.sum = histogram._sum
        # Histogram.observe counts an amount in the first bucket whose bound is >= it (the last is +Inf).
        self.buckets = histogram._buckets
        level = "error" if status >= 500 else "info"
        # Every value a client can influence goes through the JSON string encoder; the rest is fixed here.
        self.line_after_time = (
            f'", "level": "{level}", "logger": "access", "method": "{method}", '
            f'"route": {json_string(route)}, "path": '
        )
        self.line_after_path = f', "status": {status}, "duration_ms": '


_BUCKET_BOUNDS = (*LATENCY_BUCKETS, float("inf"))


class RequestObserver:
    """WSGI middleware: request id in and out, then metrics and one JSON access line per request."""

    def __init__(self, wsgi_app, *, access_log: bool, metrics: bool) -> None:
        self.wsgi_app = wsgi_app
        self.access_log = access_log
        self.metrics = metrics
        self._outcomes: dict[tuple[str, str, int], _Outcome] = {}

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if not request_id or not REQUEST_ID_PATTERN.fullmatch(request_id):
            request_id = os.urandom(16).hex()
        environ[REQUEST_ID_ENVIRON] = request_id
        # An application that raises instead of answering (only with PROPAGATE_EXCEPTIONS) counts as a 500.
        status = ["500"]

        def start_response_with_id(status_line, headers, exc_info=None):
            status[0] = status_line
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, start_response_with_id)
        except WouldWait:
            # Not answered here: the worker runs the request again on its thread pool, counted then.
            started = None
            raise
        finally:
            if started is not None:
                self.observe(environ, int(status[0][:3]), time.perf_counter() - started)

    def observe(self, environ, status: int, elapsed: float) -> None:
        """Count the request, observe its latency and write its access line."""
        route = environ.get(ROUTE_ENVIRON, UNMATCHED_ROUTE)
        method = environ.get("REQUEST_METHOD", "")
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (route, method, status)
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = self._outcomes[key] = _Outcome(route, method, status)
        if self.metrics:
            outcome.count.inc(1)
            outcome.sum.inc(elapsed)
            outcome.buckets[bisect_left(_BUCKET_BOUNDS, elapsed)].inc(1)
        if self.access_log:
            # The trace id is set by src/tracing.py, only while tracing is on (32 hex digits, made there).
            trace_id = environ.get(TRACE_ID_ENVIRON)
            trace = "" if trace_id is None else f', "trace_id": "{trace_id}"'
            # Built by hand: json.dumps of a dict costs several times more.
            line = (
                f'{{"time": "{utc_timestamp(time.time())}{outcome.line_after_time}'
                f"{json_string(environ.get('PATH_INFO', ''))}{outcome.line_after_path}"
                f'{elapsed * 1000:.3f}, "request_id": "{environ[REQUEST_ID_ENVIRON]}", '
                f'"remote_addr": {json_string(environ.get("REMOTE_ADDR") or "")}{trace}}}\n'
            )
            try:  # noqa: SIM105 - contextlib.suppress costs an object per request
                os.write(1, line.encode())
            except OSError:
                pass  # a closed or full stdout must not fail the request


class _RouteRecorder:
    """``Request.url_rule`` that also leaves the matched route template where the middleware finds it.

    Flask sets ``url_rule`` once, when it matches the URL (before any ``before_request`` function), and never
    for a path that matches no route: no hook runs per request for this.
    """

    def __set_name__(self, owner, name) -> None:
        self.name = name

    def __get__(self, request, owner=None):
        if request is None:
            return self
        return request.__dict__.get(self.name)

    def __set__(self, request, rule) -> None:
        request.__dict__[self.name] = rule
        if rule is not None:
            request.environ[ROUTE_ENVIRON] = rule.rule


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: every worker's samples under gunicorn, this process's otherwise."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        FoldingCollector(registry)
        return registry
    return REGISTRY


def configure_logging(level: int) -> None:
    """Send every log record to stdout as JSON (replacing a handler installed by an earlier call)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_flask_api_json", False)]:
        root.removeHandler(handler)
    handler = StdoutLineHandler()
    handler.setFormatter(JsonFormatter())
    handler._flask_api_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def init_app(app: Flask) -> None:
    """Attach request ids, JSON logs, metrics and (unless disabled or moved to METRICS_PORT) /metrics."""
    settings = app.config.get("SETTINGS")
    metrics_enabled = getattr(settings, "metrics_enabled", True)
    metrics_port = getattr(settings, "metrics_port", None)
    level_name = str(getattr(settings, "log_level", "info") or "info").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO

    configure_logging(level)
    # Flask's own handler would write plain text to stderr next to the JSON lines.
    app.logger.removeHandler(default_handler)

    # The route is recorded when Flask matches it, so it is known even when a before_request function answers.
    app.request_class = type("ObservedRequest", (app.request_class,), {"url_rule": _RouteRecorder()})

    if metrics_enabled and metrics_port is None:
        registry = metrics_registry()

        def metrics() -> Response:
            """Prometheus text exposition of the request counter and latency histogram."""
            return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        documented = operation(
            "metrics",
            "health",
            "Prometheus metrics summed over all workers",
            {
                200: ok("Prometheus text exposition format.", {"type": "string"}, media_type="text/plain"),
                404: None,
            },
            description="Served here unless METRICS_PORT is set (then only on that port, 404 here).",
        )
        app.add_url_rule("/metrics", "metrics", waits_on_nothing(documented(metrics)), methods=["GET"])

    app.wsgi_app = RequestObserver(  # type: ignore[method-assign]
        app.wsgi_app, access_log=level <= logging.INFO, metrics=metrics_enabled
    )

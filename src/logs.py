"""The one JSON line format of every log record: gunicorn's own, and the application's.

gunicorn's logger (src/serving.py) and the application (src/observability.py) both install ``JsonFormatter``
behind ``StdoutLineHandler``; the access lines, built by hand for speed in src/observability.py, use the same
``time`` and the same first three fields. The fields are documented once, in docs/serving.md#logs.

Nothing here imports prometheus_client: the gunicorn master imports this module before its on_starting hook
has chosen PROMETHEUS_MULTIPROC_DIR (see create_app).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from flask import has_request_context, request

REQUEST_ID_ENVIRON = "flask_api.request_id"
# The request's trace id (32 hex digits), set only while tracing is on (src/tracing.py).
TRACE_ID_ENVIRON = "flask_api.trace_id"

# Safety net for log records: a token, bearer credential or password hash that slipped into a message or a
# traceback is masked before the line is written. Access lines never carry headers, bodies or query strings.
_SECRET_PATTERN = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"  # JWT
    r"|\$argon2(?:id|i|d)\$[^\s\"']+"  # argon2 hash
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]+"  # Authorization: Bearer ...
)
_REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """Mask tokens, bearer credentials and password hashes in a log message."""
    return _SECRET_PATTERN.sub(_REDACTED, text)


def current_request_id() -> str | None:
    """The id of the request being handled, or None outside a request."""
    if has_request_context():
        return request.environ.get(REQUEST_ID_ENVIRON)
    return None


_last_second: list[tuple[int, str]] = [(-1, "")]


def utc_timestamp(seconds: float) -> str:
    """RFC 3339 UTC time with milliseconds, e.g. 2026-11-26T17:02:03.456Z."""
    whole = int(seconds)
    # One read of the shared pair: with threaded workers, another thread may replace it meanwhile.
    cached = _last_second[0]
    if whole != cached[0]:  # strftime once per second, not once per line
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _last_second[0] = cached
    return f"{cached[1]}.{int((seconds - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid; request_id (and trace_id while tracing)
    inside a request; exc_info when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        if has_request_context():
            environ = request.environ
            request_id = environ.get(REQUEST_ID_ENVIRON)
            if request_id is not None:
                line["request_id"] = request_id
            trace_id = environ.get(TRACE_ID_ENVIRON)
            if trace_id is not None:
                line["trace_id"] = trace_id
        if record.exc_info:
            line["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class StdoutLineHandler(logging.Handler):
    """Write each record with a single os.write to stdout: lines from several workers never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(1, (self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.handleError(record)

"""HTTP/1.1 on the worker's connections: llhttp parses (``httptools``), the WSGI application answers.

One ``Connection`` per client socket, an ``asyncio.Protocol`` driven by the worker's event loop. It does what
HTTP/1.1 asks of a server and nothing else: framing (Content-Length or chunked, never both), keep-alive and
pipelining (answered in order; past ``_PAUSE_AT`` complete requests waiting it stops reading, and a client
that pipelines more than ``_MAX_PIPELINED`` at once gets those answered and the connection closed), the size
limits of a request head (gunicorn's ``limit_request_line``, ``limit_request_fields`` and
``limit_request_field_size``), ``Expect: 100-continue``, a body read up to ``MAX_CONTENT_LENGTH`` and no
further, and ``Connection: close`` once the worker stops. Where a request runs (loop or pool) and how long a
connection may wait for a head belong to the worker (``WsgiOnLoop`` and ``ConnectionTable``, src/worker.py).

llhttp refuses what a proxy and this server could frame differently (request smuggling): a Content-Length
beside a Transfer-Encoding, two Content-Lengths, a signed or non-decimal length, obsolete line folding, bare
LF line endings, control characters in a field, a bad chunk size. This module adds: a Transfer-Encoding
other than exactly ``chunked`` (501), any Transfer-Encoding in HTTP/1.0, a missing or repeated Host in
HTTP/1.1, a version other than 1.0 and 1.1 (505). Every refusal is an ``application/problem+json`` answer
after the responses owed to the requests before it, and the connection closes after it: nothing behind a
refused head is ever read as a request.

It replaced gunicorn's asyncio protocol, which parses in Python (docs/performance.md has the figures).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

import httptools

from .lifecycle import WouldWait, on_event_loop

# (status line, headers, whole body): what ``_call_wsgi`` returns.
Response = tuple[str, list[tuple[str, str]], bytes]

# Complete requests waiting for their answer: past _PAUSE_AT the connection stops reading until they are
# answered; more than _MAX_PIPELINED arriving at once (in one read) are refused with the connection closed.
_PAUSE_AT = 8
_MAX_PIPELINED = 64

# Closing a socket with unread bytes makes the kernel send a reset, which can destroy the response still on
# its way to the client. So a connection that stops reading before the client's end of stream (a refusal, a
# body past the limit) half-closes, then reads and drops what still comes, for at most so long and so much.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 22

# A limit of 0 means "none" in gunicorn's settings; a head is still bounded, by this much per part.
_UNLIMITED_PART = 65536

# The request headers WSGI names without the HTTP_ prefix.
_UNPREFIXED = frozenset({"CONTENT_LENGTH", "CONTENT_TYPE"})

# Header names seen, as WSGI keys (None: dropped, see _environ_key); bounded like any per-client cache.
_KEYS: dict[bytes, str | None] = {}
_MAX_KEYS = 1024

# Reason phrases as RFC 9110 spells them (Flask's status strings are upper case: "401 UNAUTHORIZED").
_REASONS = {status.value: status.phrase for status in HTTPStatus} | {413: "Content Too Large"}
# The status line of each known code; an unknown one keeps the application's own phrase.
_STATUS_LINES = {str(code): f"HTTP/1.1 {code} {reason}\r\n" for code, reason in _REASONS.items()}


class Application(Protocol):
    """What a connection needs of the worker's WSGI side (``WsgiOnLoop``)."""

    max_body: int | None

    def runs_on_pool(self, method: str, path: str) -> bool: ...

    def call(self, environ: dict[str, Any]) -> Response: ...

    def submit(self, environ: dict[str, Any]) -> asyncio.Future[Response]: ...


class Table(Protocol):
    """What a connection tells the worker's ``ConnectionTable``."""

    def opened(self, connection: Any) -> None: ...

    def began(self, connection: Any) -> None: ...

    def request_started(self, connection: Any) -> None: ...

    def request_finished(self, connection: Any) -> None: ...

    def lost(self, connection: Any) -> None: ...


class HeadLimits(NamedTuple):
    """gunicorn's request-head limits, read once per worker."""

    request_line: int
    fields: int
    field_size: int

    @classmethod
    def from_config(cls, cfg: Any) -> HeadLimits:
        return cls(
            request_line=cfg.limit_request_line or _UNLIMITED_PART,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size or _UNLIMITED_PART,
        )

    @property
    def head(self) -> int:
        """Bytes a whole head may take: the request line and every field at their limits."""
        return self.request_line + 2 + self.fields * (self.field_size + 2) + 2


class Refused(Exception):  # noqa: N818 - a refusal, not an error of this server
    """A request this server will not read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Stop(Exception):  # noqa: N818 - a signal to the parser loop
    """Raised from a parser callback: read nothing more from this connection."""


class Request:
    """One request as it is parsed, then answered."""

    __slots__ = (
        "body",
        "chunked",
        "close_after",
        "expects_continue",
        "headers",
        "hosts",
        "keep_alive",
        "length",
        "method",
        "path",
        "path_info",
        "query",
        "size",
        "transfer_encodings",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.hosts = 0
        self.transfer_encodings = 0
        self.length: int | None = None
        self.chunked = False
        self.expects_continue = False
        self.close_after = False
        self.keep_alive = True
        self.method = "GET"
        self.version = "1.1"
        self.path = "/"  # decoded text, for matching the route
        self.path_info = "/"  # WSGI's PATH_INFO: the UTF-8 bytes as latin-1 code points
        self.query = ""


_date: list[Any] = [0, b""]


def date_header() -> bytes:
    """``Date: ...\\r\\n``, formatted once a second."""
    now = int(time.time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
    return _date[1]


def _environ_key(name: bytes) -> str | None:
    """The WSGI key of a request header; None for a name with an underscore.

    "X_Forwarded_For" and "X-Forwarded-For" would be one WSGI key: the ambiguous spelling is dropped.
    """
    key = _KEYS.get(name, "")
    if key == "":
        text = name.decode("latin-1")
        if "_" in text:
            key = None
        else:
            key = text.upper().replace("-", "_")
            if key not in _UNPREFIXED:
                key = "HTTP_" + key
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


def problem_response(status: int, detail: str) -> Response:
    """An ``application/problem+json`` answer of this module's own (the application is never called)."""
    title = _REASONS[status]
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    return (
        f"{status} {title}",
        [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))],
        body,
    )


class Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, keep alive or close (module docstring)."""

    def __init__(
        self,
        application: Application,
        table: Table,
        limits: HeadLimits,
        *,
        worker: Any,
        keepalive: bool,
        scheme: str = "http",
    ) -> None:
        self.application = application
        self.table = table
        self.limits = limits
        self.head_limit = limits.head
        self.worker = worker  # gunicorn's: alive, nr, max_requests, log
        self.keepalive = keepalive
        self.scheme = scheme
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ("", "")
        self.local = ("", "")
        # Not yet lost (ConnectionTable counts it).
        self.open = True
        # A byte of a request head has come and the head is not complete yet.
        self.head_begun = False
        # Bytes received since the head being parsed began; -1 while a body is read.
        self.head_bytes = 0
        # False once nothing more is to be read (a refusal, an early answer, the client's end of stream).
        self.reading = True
        self.read_paused = False
        self.write_paused = False
        self.eof = False
        # Stopped reading while the client may still be sending (see _LINGER_SECONDS); then, after the last
        # response: bytes dropped so far, and the timer that closes.
        self.unread = False
        self.lingering = -1
        self.linger_timer: asyncio.TimerHandle | None = None
        # The request being parsed, the complete ones waiting for their turn, and how many are in hand
        # (head complete, response not written yet).
        self.request: Request | None = None
        self.pending: deque[Request | Refused] = deque()
        self.in_hand = 0
        # A request is answered on the pool: the ones behind it wait.
        self.answering = False

    # ----------------------------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), str(peer[1]))
        if isinstance(local, tuple):
            self.local = (str(local[0]), str(local[1]))
        self.table.opened(self)

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            if self.lingering >= 0:
                self.lingering += len(data)
                if self.lingering > _LINGER_BYTES:
                    self.close()
            return
        if self.head_bytes >= 0:
            self.head_bytes += len(data)
            if self.head_bytes > self.head_limit:
                self.refuse(Refused(431, "The request head is larger than this server reads."))
                self.serve()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or an Upgrade: the request is answered as any other (no protocol switch), and what
            # follows on the connection is not HTTP/1.1: read nothing more.
            self.stop_reading()
            if self.pending and isinstance(self.pending[-1], Request):
                self.pending[-1].close_after = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refused):
                self.refuse(cause)
            elif isinstance(cause, _Stop):
                self.stop_reading()
            else:
                raise
        except httptools.HttpParserError as exc:
            self.refuse(Refused(400, f"The request could not be parsed: {exc}."))
        self.serve()

    def eof_received(self) -> bool | None:
        """The client has sent all it will: answer what is in hand, then close."""
        self.eof = True
        self.stop_reading()
        if self.in_hand:
            return True  # keep the connection open for the responses
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.serve()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.clear()
        self.reading = False
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        if self.open:
            self.open = False
            self.table.lost(self)

    def close(self) -> None:
        """Close from the server side; what is written already is still sent."""
        self.reading = False
        self.lingering = -1
        if self.transport is not None:
            self.transport.close()

    def linger(self) -> None:
        """After the last response: half-close, drop what the client still sends, close at its end of stream
        or after _LINGER_SECONDS / _LINGER_BYTES, whichever comes first.
        """
        transport = self.transport
        assert transport is not None  # noqa: S101
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self.lingering = 0
        self.linger_timer = asyncio.get_running_loop().call_later(_LINGER_SECONDS, self.close)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    # ------------------------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.request = Request()
        if not self.head_begun:
            self.head_begun = True
            self.table.began(self)

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None  # noqa: S101 - llhttp calls on_message_begin first
        request.url += url
        if len(request.url) > self.limits.request_line:
            raise Refused(414, "The request target is longer than this server reads.")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None  # noqa: S101
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise Refused(431, "A header field is longer than this server reads.")
        headers = request.headers
        headers.append((name, value))
        if len(headers) > self.limits.fields:
            raise Refused(431, "The request has more header fields than this server reads.")
        if len(name) == 4 and name.lower() == b"host":
            request.hosts += 1
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            request.transfer_encodings += 1
            if value.strip().lower() != b"chunked":
                raise Refused(501, "The only transfer coding accepted is chunked.")
            request.chunked = True
        elif len(name) == 14 and name.lower() == b"content-length":
            try:
                request.length = int(value)  # llhttp has checked it: digits, one value
            except ValueError:
                raise Refused(400, "Content-Length is not a decimal number.") from None
        elif len(name) == 6 and name.lower() == b"expect":
            request.expects_continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None  # noqa: S101
        parser = self.parser
        self.head_begun = False
        self.head_bytes = -1
        self.in_hand += 1
        self.table.request_started(self)
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise Refused(505, "This server speaks HTTP/1.1 and HTTP/1.0.")
        if request.transfer_encodings > 1 or (request.transfer_encodings and version == "1.0"):
            raise Refused(400, "Transfer-Encoding must be chunked, once, in HTTP/1.1.")
        if request.hosts > 1 or (request.hosts == 0 and version == "1.1"):
            raise Refused(400, "An HTTP/1.1 request names its Host once.")
        request.version = version
        request.method = parser.get_method().decode("ascii")
        request.keep_alive = parser.should_keep_alive()
        self.split_target(request)
        limit = self.application.max_body
        if limit is not None and request.length is not None and request.length > limit:
            # Not read at all: the application refuses it (413) from the declared length.
            request.close_after = True
            self.complete(request)
            raise _Stop
        if request.expects_continue and (request.chunked or request.length) and self.in_hand == 1:
            assert self.transport is not None  # noqa: S101
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        assert request is not None  # noqa: S101
        request.body.append(chunk)
        request.size += len(chunk)
        limit = self.application.max_body
        if limit is not None and request.size > limit:
            # A chunked body past the limit: what was read is enough for the application to answer 413.
            request.close_after = True
            self.complete(request)
            raise _Stop

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None  # noqa: S101
        self.head_bytes = 0
        self.complete(request)
        if len(self.pending) > _MAX_PIPELINED:
            request.close_after = True
            raise _Stop

    # --------------------------------------------------------------------------------------------- reading

    def split_target(self, request: Request) -> None:
        """Path and query of the request target (origin-form, or absolute-form as a proxy sends it)."""
        url = request.url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise Refused(400, "The request target is not a path or an absolute URL.") from None
            path, query = parsed.path or b"/", parsed.query or b""
            if path[:1] != b"/":
                raise Refused(400, "The request target is not a path or an absolute URL.")
        raw = unquote_to_bytes(path) if b"%" in path else path
        request.path_info = raw.decode("latin-1")
        request.path = request.path_info if raw.isascii() else raw.decode("utf-8", "replace")
        request.query = query.decode("latin-1")

    def complete(self, request: Request) -> None:
        self.request = None
        self.pending.append(request)

    def refuse(self, refusal: Refused) -> None:
        """Answer ``refusal`` after what is owed, read nothing more."""
        if self.head_bytes == -1 and self.request is not None:
            # The refused request's head was counted in hand; its refusal takes its place.
            self.in_hand -= 1
        self.request = None
        self.head_begun = False
        self.in_hand += 1
        self.table.request_started(self)
        self.pending.append(refusal)
        self.stop_reading()

    def stop_reading(self) -> None:
        self.reading = False
        self.unread = not self.eof
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    # ------------------------------------------------------------------------------------------- answering

    def serve(self) -> None:
        """Answer the complete requests in order, while nothing is on the pool and the client reads."""
        pending = self.pending
        while pending and not self.answering and not self.write_paused and self.open:
            item = pending.popleft()
            if isinstance(item, Refused):
                self.respond(None, problem_response(item.status, item.detail))
                continue
            environ = self.environ(item)
            if self.application.runs_on_pool(item.method, item.path):
                self.answer_on_pool(item, environ)
                return
            try:
                with on_event_loop():
                    response = self.application.call(environ)
            except WouldWait:  # the store was about to wait: run it where waiting is fine
                self.answer_on_pool(item, self.environ(item))
                return
            except Exception:  # Flask answers its own errors; anything else is a bug
                self.worker.log.exception("Error handling request %s %s", item.method, item.path)
                response = problem_response(500, "The server failed to answer this request.")
            self.respond(item, response)
        if not self.reading or self.transport is None:
            return
        if self.read_paused and len(pending) < _PAUSE_AT:
            self.read_paused = False
            self.transport.resume_reading()
        elif not self.read_paused and len(pending) >= _PAUSE_AT:
            self.read_paused = True
            self.transport.pause_reading()

    def answer_on_pool(self, request: Request, environ: dict[str, Any]) -> None:
        self.answering = True
        self.application.submit(environ).add_done_callback(
            lambda future: self.answered_on_pool(request, future)
        )

    def answered_on_pool(self, request: Request, future: asyncio.Future[Response]) -> None:
        self.answering = False
        if future.cancelled() or not self.open:
            return
        try:
            response = future.result()
        except Exception:
            self.worker.log.exception("Error handling request %s %s", request.method, request.path)
            response = problem_response(500, "The server failed to answer this request.")
        self.respond(request, response)
        self.serve()

    def respond(self, request: Request | None, response: Response) -> None:
        """Write one response; close after it when the request, the client or the worker says so."""
        status, headers, body = response
        worker = self.worker
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        close = (
            request is None
            or request.close_after
            or not request.keep_alive
            or not self.keepalive
            or not worker.alive
            or (self.eof and self.in_hand == 1)
        )
        code = status[:3]
        lines = [_STATUS_LINES.get(code) or f"HTTP/1.1 {status}\r\n"]
        has_length = False
        for name, value in headers:
            if len(name) == 14 and name.lower() == "content-length":
                has_length = True
            lines += (name, ": ", value, "\r\n")
        if not has_length and code not in ("204", "304") and code[0] != "1":
            lines += ("Content-Length: ", str(len(body)), "\r\n")
        if close:
            lines.append("Connection: close\r\n")
        elif request is not None and request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        head = "".join(lines).encode("latin-1") + date_header() + b"\r\n"
        if request is not None and request.method == "HEAD":
            body = b""
        transport = self.transport
        assert transport is not None  # noqa: S101
        transport.write(head + body)
        self.in_hand -= 1
        if close:
            self.pending.clear()
            if self.unread:
                self.linger()
            else:
                self.close()
        elif self.in_hand == 0:
            self.table.request_finished(self)

    def environ(self, request: Request) -> dict[str, Any]:
        """The WSGI environ of ``request`` (PEP 3333)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": request.path_info,
            "QUERY_STRING": request.query,
            "SERVER_NAME": self.local[0],
            "SERVER_PORT": self.local[1],
            "SERVER_PROTOCOL": "HTTP/" + request.version,
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": self.peer[1],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(b"".join(request.body)),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            key = _environ_key(name)
            if key is None:
                continue
            text = value.decode("latin-1")
            if key in environ:
                environ[key] += "," + text
            else:
                environ[key] = text
        return environ


def connection_factory(
    application: Application, table: Table, limits: HeadLimits, *, worker: Any, keepalive: bool, scheme: str
) -> Callable[[], Connection]:
    """What ``loop.connect_accepted_socket`` calls for each accepted socket."""
    return lambda: Connection(application, table, limits, worker=worker, keepalive=keepalive, scheme=scheme)

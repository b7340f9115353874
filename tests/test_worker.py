"""The worker's connections (src/http1.py, src/worker.py), driven in-process: bytes in, bytes out.

What reaches the WSGI application (environ, body), what comes back on the wire (status line, headers, body),
what is refused before the application is called, where each route runs (the event loop or the thread
pool), and the connection table's bookkeeping. The same connections under a real gunicorn are
tests/integration/test_worker.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import threading
from pathlib import Path

import pytest
from werkzeug.routing import Map, Rule

from harness.gunicorn_config import gunicorn_settings
from harness.http1 import Session, Worker
from src import http1
from src.http1 import HeadLimits
from src.lifecycle import WouldWait, must_not_wait, on_event_loop
from src.routes.waits import loop_endpoints, waits_on_nothing
from src.storage import JsonFileStore, PostgresStore
from src.worker import LOOP_ENDPOINTS, ConnectionTable, RoutePlacement, WsgiOnLoop
from tests.conftest import TEST_SECRET_KEY
from tests.storage.workers import HASH


def request(
    path: str = "/healthz",
    method: str = "GET",
    *,
    headers: tuple[str, ...] = (),
    body: bytes = b"",
    version: str = "1.1",
    host: str | None = "api.example",
) -> bytes:
    """A request as a client writes it; a Content-Length for a body unless ``headers`` frames it."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += headers
    if body and not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Reply:
    """One response read off the wire."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ",".join(values) if values else None

    def json(self) -> dict:
        return json.loads(self.body)


def replies(raw: bytes, head_request: bool = False) -> list[Reply]:
    """Every response in ``raw``, framed by its Content-Length (interim 1xx responses included)."""
    found = []
    while raw:
        head, separator, raw = raw.partition(b"\r\n\r\n")
        assert separator, f"an incomplete response head: {head!r}"
        status_line, *fields = head.decode("latin-1").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = [tuple(field.split(": ", 1)) for field in fields]
        reply = Reply(int(status), reason, headers, b"")  # type: ignore[arg-type]
        length = 0 if head_request or reply.status < 200 else int(reply.header("Content-Length") or 0)
        reply.body, raw = raw[:length], raw[length:]
        found.append(reply)
    return found


def exchange(application, *chunks: bytes, **session: object) -> tuple[list[Reply], Session]:
    """Send ``chunks`` (one read each) on a new connection; the responses, and the session to look at."""
    opened = Session(application, **session)  # type: ignore[arg-type]
    try:
        written = opened.send(*chunks)
    finally:
        opened.close()
    return replies(written), opened


class Recorder:
    """A WSGI application that records the environ and the thread it ran on, and answers ``reply``."""

    def __init__(self, reply: bytes = b"answer") -> None:
        self.reply = reply
        self.environ: dict = {}
        self.body = b""
        self.thread = None
        self.answered = 0

    def __call__(self, environ, start_response):
        self.answered += 1
        self.environ = environ
        self.body = environ["wsgi.input"].read()
        self.thread = threading.current_thread()
        write = start_response("201 Created", [("Content-Type", "text/plain"), ("X-Seen", "yes")])
        write(b"an ")
        return [self.reply, b""]


def on_loop(method: str, path: str) -> bool:
    return False


def on_pool(method: str, path: str) -> bool:
    return True


def adapter_for(app, *, runs_on_pool=on_loop, max_body: int | None = 1024) -> WsgiOnLoop:
    return WsgiOnLoop(app, threads=2, runs_on_pool=runs_on_pool, max_body=max_body)


# ------------------------------------------------------------------------------------- what the app sees


def test_the_environ_carries_the_request_as_pep_3333_names_it():
    app = Recorder()
    raw = request(
        "/h%C3%A9llo?a=1&b=%20",
        headers=(
            "Content-Type: application/json",
            "Accept: text/plain",
            "Accept: application/json",
            "X_Request_ID: smuggled",
        ),
    )
    exchange(adapter_for(app), raw, scheme="https")

    environ = app.environ
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/h\u00c3\u00a9llo"  # UTF-8 bytes as latin-1 code points
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["SERVER_NAME"] == "10.0.0.5"
    assert environ["SERVER_PORT"] == "8888"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "192.0.2.7"
    assert environ["REMOTE_PORT"] == "40123"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTP_HOST"] == "api.example"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_ACCEPT"] == "text/plain,application/json"
    assert "HTTP_X_REQUEST_ID" not in environ


def test_an_absolute_form_target_reaches_the_application_as_its_path():
    app = Recorder()
    exchange(adapter_for(app), request("http://api.example/hello?x=1"))

    assert (app.environ["PATH_INFO"], app.environ["QUERY_STRING"]) == ("/hello", "x=1")


def test_the_response_goes_out_whole_with_its_status_headers_length_and_date():
    (reply,), session = exchange(adapter_for(Recorder(b"here")), request())

    assert (reply.status, reply.reason) == (201, "Created")
    assert reply.header("Content-Type") == "text/plain"
    assert reply.header("X-Seen") == "yes"
    assert reply.header("Content-Length") == "7"
    assert reply.header("Date").endswith(" GMT")
    assert reply.header("Connection") is None  # kept alive
    assert reply.body == b"an here"
    assert not session.transport.ended


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ("401 UNAUTHORIZED", "401 Unauthorized"),  # Flask's spelling
        ("413 REQUEST ENTITY TOO LARGE", "413 Content Too Large"),
        ("299 Made Up", "299 Made Up"),  # no standard phrase: the application's
    ],
)
def test_the_status_line_carries_the_standard_reason_phrase(status, line):
    def app(environ, start_response):
        start_response(status, [])
        return [b""]

    _answers, session = exchange(adapter_for(app), request())

    assert session.written.startswith(f"HTTP/1.1 {line}\r\n".encode())


def test_a_head_request_gets_the_headers_and_no_body():
    session = Session(adapter_for(Recorder(b"here")))
    written = session.send(request(method="HEAD"), request())
    session.close()

    head, following = (
        replies(written[: written.index(b"HTTP/1.1", 1)], head_request=True),
        written[written.index(b"HTTP/1.1", 1) :],
    )
    assert head[0].header("Content-Length") == "7"
    assert head[0].body == b""
    assert replies(following)[0].body == b"an here"


def test_a_body_sent_in_pieces_reaches_the_application_whole():
    app = Recorder()
    head = request(method="POST", headers=("Transfer-Encoding: chunked",))
    exchange(adapter_for(app), head + b'6\r\n{"user\r\n', b"0", b'b\r\nname": "a"}\r\n0\r\n\r\n')

    assert app.body == b'{"username": "a"}'


def test_a_chunked_body_stops_being_read_one_byte_past_the_limit_and_the_connection_closes():
    app = Recorder()
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n"
    (reply,), session = exchange(
        adapter_for(app, max_body=1000),
        request(method="POST", headers=("Transfer-Encoding: chunked",)),
        chunk,
        chunk,
        chunk,
        chunk + b"0\r\n\r\n",
    )

    assert len(app.body) == 1200  # two chunks: past the limit, the other two are never read
    assert reply.header("Connection") == "close"
    assert session.transport.ended


def test_a_declared_length_over_the_limit_is_not_read_and_the_connection_closes():
    app = Recorder()
    (reply,), session = exchange(
        adapter_for(app, max_body=1000),
        request(method="POST", headers=("Content-Length: 5000", "Content-Type: application/json")),
    )

    assert app.body == b""
    assert app.environ["CONTENT_LENGTH"] == "5000"  # from which Flask answers 413
    assert reply.header("Connection") == "close"
    assert session.transport.ended


def test_a_client_gone_before_its_body_never_reaches_the_application():
    app = Recorder()
    session = Session(adapter_for(app))
    session.send(request(method="POST", headers=("Content-Length: 10",)) + b"abc")
    session.lose()
    session.close()

    assert app.answered == 0
    assert session.written == b""
    assert session.table.calls[-1] == "lost"


def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent():
    app = Recorder()
    session = Session(adapter_for(app))
    interim = session.send(request(method="POST", headers=("Content-Length: 4", "Expect: 100-continue")))
    written = session.send(b"abcd")
    session.close()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert [reply.status for reply in replies(written)] == [100, 201]
    assert app.body == b"abcd"


def test_http_1_0_keeps_alive_only_when_asked_and_says_so():
    (kept,), kept_session = exchange(
        adapter_for(Recorder()), request(version="1.0", headers=("Connection: keep-alive",))
    )
    (closed,), closed_session = exchange(adapter_for(Recorder()), request(version="1.0"))

    assert kept.header("Connection") == "keep-alive"
    assert not kept_session.transport.ended
    assert closed.header("Connection") == "close"
    assert closed_session.transport.ended


def test_connection_close_from_the_client_is_honoured():
    (reply,), session = exchange(adapter_for(Recorder()), request(headers=("Connection: close",)))

    assert reply.header("Connection") == "close"
    assert session.transport.ended


def test_with_keepalive_off_every_response_closes_its_connection():
    (reply,), session = exchange(adapter_for(Recorder()), request(), keepalive=False)

    assert reply.header("Connection") == "close"
    assert session.transport.ended


def test_a_stopping_worker_says_connection_close_on_its_last_response():
    worker = Worker()
    worker.alive = False
    (reply,), session = exchange(adapter_for(Recorder()), request(), worker=worker)

    assert reply.header("Connection") == "close"
    assert session.transport.ended


def test_max_requests_stops_the_worker_after_the_response_that_reaches_it():
    worker = Worker(max_requests=2)
    answers, session = exchange(adapter_for(Recorder()), request() + request() + request(), worker=worker)

    assert [reply.header("Connection") for reply in answers] == [None, "close"]
    assert worker.alive is False
    assert session.transport.ended


def test_pipelined_requests_are_answered_in_order_across_loop_and_pool():
    def echo(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["QUERY_STRING"].encode()]

    placement = RoutePlacement(
        Map([Rule("/healthz", endpoint="healthz"), Rule("/slow", endpoint="slow")]), frozenset({"healthz"})
    )
    answers, _session = exchange(
        adapter_for(echo, runs_on_pool=placement),
        request("/slow?n=1") + request("/healthz?n=2") + request("/slow?n=3") + request("/healthz?n=4"),
    )

    assert [reply.body for reply in answers] == [b"n=1", b"n=2", b"n=3", b"n=4"]


def test_a_request_read_while_the_one_before_is_on_the_pool_waits_its_turn():
    on_the_pool = threading.Event()

    def echo(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            on_the_pool.wait(timeout=10)  # held until the next request has been read
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["QUERY_STRING"].encode()]

    placement = RoutePlacement(
        Map([Rule("/healthz", endpoint="healthz"), Rule("/slow", endpoint="slow")]), frozenset({"healthz"})
    )
    session = Session(adapter_for(echo, runs_on_pool=placement))
    session.loop.call_soon(session.connection.data_received, request("/slow?n=1"))
    session.loop.call_soon(session.connection.data_received, request("/healthz?n=2"))
    session.loop.call_soon(on_the_pool.set)
    session.loop.run_until_complete(session.settled())
    session.close()

    assert [reply.body for reply in replies(session.written)] == [b"n=1", b"n=2"]


def test_a_client_that_pipelines_without_reading_is_paused_then_resumed():
    session = Session(adapter_for(Recorder(), runs_on_pool=on_pool))
    connection = session.connection
    connection.write_paused = True  # the client reads nothing: its socket buffer is full
    session.send(request() * 10)
    paused = session.transport.reading_paused
    session.loop.call_soon(connection.resume_writing)
    session.loop.run_until_complete(session.settled())
    session.close()

    assert paused is True
    assert session.transport.reading_paused is False
    assert len(replies(session.written)) == 10


def test_more_than_64_requests_pipelined_at_once_get_65_answers_and_the_connection_closes():
    answers, session = exchange(adapter_for(Recorder()), request() * 100)

    assert len(answers) == 65
    assert answers[-1].header("Connection") == "close"
    assert session.transport.ended


def test_an_upgrade_is_answered_as_http_1_1_and_the_connection_closes():
    app = Recorder()
    (reply,), session = exchange(
        adapter_for(app), request(headers=("Connection: Upgrade", "Upgrade: websocket")) + b"\x81\x05hello"
    )

    assert reply.status == 201
    assert session.transport.ended
    assert app.answered == 1


def test_a_request_in_hand_when_the_client_ends_its_stream_is_still_answered():
    session = Session(adapter_for(Recorder(), runs_on_pool=on_pool))
    kept = []
    session.loop.call_soon(session.connection.data_received, request())  # goes to the pool
    session.loop.call_soon(lambda: kept.append(session.connection.eof_received()))
    session.loop.run_until_complete(session.settled())
    session.close()

    assert kept == [True]
    assert [reply.header("Connection") for reply in replies(session.written)] == ["close"]
    assert session.transport.ended


# ------------------------------------------------------------------------------------- refused before the app

REFUSED = {
    "Transfer-Encoding other than chunked": (
        request(method="POST", headers=("Transfer-Encoding: gzip, chunked",)) + b"0\r\n\r\n",
        501,
    ),
    "Transfer-Encoding in HTTP/1.0": (
        request(method="POST", version="1.0", headers=("Transfer-Encoding: chunked",)) + b"0\r\n\r\n",
        400,
    ),
    "HTTP/1.1 without Host": (request(host=None), 400),
    "two Hosts": (request(headers=("Host: other.example",)), 400),
    "HTTP/2.0 on an HTTP/1.1 connection": (request(version="2.0"), 505),
    "a request target over limit_request_line": (request("/" + "a" * 4100), 414),
    "more than limit_request_fields fields": (request(headers=tuple(f"X-{n}: v" for n in range(101))), 431),
    "a field over limit_request_field_size": (request(headers=("X-A: " + "a" * 8190,)), 431),
    "an unknown method": (request(method="BREW"), 400),
    "a control character in the target": (request("/a\x7fb"), 400),
    "an asterisk target": (request("*", method="OPTIONS"), 400),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_request_this_server_will_not_read_is_refused_as_problem_json_and_the_connection_closes(case):
    raw, status = REFUSED[case]
    app = Recorder()

    answers, session = exchange(adapter_for(app), raw + request())  # a request behind it is never read

    assert [reply.status for reply in answers] == [status]
    assert answers[0].header("Content-Type") == "application/problem+json"
    assert answers[0].header("Connection") == "close"
    assert answers[0].json()["status"] == status
    assert session.transport.ended
    assert app.answered == 0


def test_a_head_that_never_ends_is_refused_once_past_what_the_limits_allow():
    limits = HeadLimits(request_line=100, fields=4, field_size=100)  # a head of at most 522 bytes
    session = Session(adapter_for(Recorder()), limits=limits)
    session.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 90)  # within the limits so far
    before = session.written
    session.send(b"a" * 450)
    session.close()

    assert before == b""
    (reply,) = replies(session.written)
    assert reply.status == 431
    assert session.transport.ended


def test_after_a_refusal_what_the_client_still_sends_is_dropped_until_its_end_of_stream():
    # Closing with unread bytes would reset the connection and could destroy the 413 on its way: the
    # connection half-closes, drops the rest of the body, and closes at the client's end of stream.
    app = Recorder()
    session = Session(adapter_for(app, max_body=16))
    session.send(request("/register", method="POST", headers=("Content-Length: 100",)) + b"a" * 10)
    half_closed = (session.transport.eof_written, session.transport.closed)
    session.send(b"a" * 90 + request())  # the rest of the body, and a request that is never read
    still_open = session.transport.closed
    session.end()
    session.close()

    assert half_closed == (True, False)
    assert still_open is False
    assert session.transport.closed
    assert [reply.status for reply in replies(session.written)] == [201]  # the app refused nothing itself
    assert app.answered == 1


def test_a_lingering_connection_closes_after_4_mib_dropped():
    session = Session(adapter_for(Recorder(), max_body=16))
    session.send(request(method="POST", headers=("Content-Length: 100000000",)))
    session.send(*[b"a" * (1 << 20)] * 4)
    before = session.transport.closed
    session.send(b"a")
    session.close()

    assert before is False
    assert session.transport.closed


def test_a_lingering_connection_closes_after_its_time(monkeypatch):
    monkeypatch.setattr(http1, "_LINGER_SECONDS", 0.05)
    session = Session(adapter_for(Recorder()))
    closed = session.loop.create_future()
    session.transport.on_close = lambda: closed.set_result(True)
    session.send(request(host=None))

    assert session.transport.eof_written
    assert session.loop.run_until_complete(asyncio.wait_for(closed, timeout=5)) is True
    session.close()


def test_a_connection_that_read_everything_closes_at_once():
    (reply,), session = exchange(adapter_for(Recorder()), request(headers=("Connection: close",)))

    assert reply.header("Connection") == "close"
    assert session.transport.closed
    assert not session.transport.eof_written


def test_a_refusal_comes_after_the_answers_owed_to_the_requests_before_it():
    app = Recorder()
    answers, session = exchange(adapter_for(app, runs_on_pool=on_pool), request() + request(host=None))

    assert [reply.status for reply in answers] == [201, 400]
    assert session.transport.ended


# ------------------------------------------------------------------------------------- where a route runs


def test_marked_routes_run_on_the_loop_and_the_others_on_the_pool():
    app = Recorder()
    url_map = Map(
        [Rule("/healthz", endpoint="healthz"), Rule("/register", endpoint="register", methods=["POST"])]
    )
    adapter = adapter_for(app, runs_on_pool=RoutePlacement(url_map, frozenset({"healthz"})))

    exchange(adapter, request("/healthz"))
    assert app.thread is threading.main_thread()
    exchange(adapter, request("/register", method="POST", body=b"{}"))
    assert app.thread.name.startswith("wsgi")


def test_an_application_without_a_url_map_runs_everything_on_the_pool():
    app = Recorder()
    exchange(WsgiOnLoop.for_application(app, threads=2), request("/healthz"))

    assert app.thread.name.startswith("wsgi")


def test_an_application_that_never_starts_a_response_gets_a_500_problem_and_the_worker_serves_on():
    def broken(environ, start_response):
        return [b"no status"]

    answers, session = exchange(adapter_for(broken), request() + request())

    assert [reply.status for reply in answers] == [500, 500]
    assert answers[0].header("Content-Type") == "application/problem+json"
    assert not session.transport.ended


OFFLOADED = [
    ("POST", "/register"),
    ("POST", "/authenticate"),
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("PUT", "/users/me/password"),
    ("DELETE", "/users/me"),
]
ON_LOOP = [
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    # A read that must query PostgreSQL moves to the pool as it starts (the WouldWait tests below).
    ("GET", "/hello"),
    ("GET", "/id"),
    ("GET", "/users/me"),
    ("GET", "/readyz"),
]


def spellings(path: str) -> list[str]:
    """Ways to write ``path`` that Werkzeug may match to the same rule, or to none."""
    head, _, tail = path[1:].partition("/")
    return [
        path,
        "/" + path,
        "//" + path,
        path + "/",
        "/." + path,
        path.replace("/", "//"),
        path.replace("/", "/./"),
        path.upper(),
        "/" + head + "%2F" + tail if tail else path + "%2F",
        "/" + head + ";x" + ("/" + tail if tail else ""),
    ]


@pytest.mark.parametrize(("method", "path"), OFFLOADED)
def test_every_spelling_of_a_hashing_or_writing_route_runs_on_the_pool(app, method, path):
    runs_on_pool = WsgiOnLoop.for_application(app, threads=1).runs_on_pool

    assert [spelling for spelling in spellings(path) if not runs_on_pool(method, spelling)] == []


@pytest.mark.parametrize(("method", "path"), ON_LOOP)
def test_the_service_runs_reads_and_probes_on_the_loop(app, method, path):
    runs_on_pool = WsgiOnLoop.for_application(app, threads=1).runs_on_pool

    assert runs_on_pool(method, path) is False
    assert runs_on_pool("HEAD" if method == "GET" else method, path) is False


def test_unmatched_requests_run_on_the_pool(app):
    runs_on_pool = WsgiOnLoop.for_application(app, threads=1).runs_on_pool

    assert runs_on_pool("GET", "/no-such-route") is True  # 404
    assert runs_on_pool("POST", "/healthz") is True  # 405
    assert runs_on_pool("GET", "/users//me") is True  # a redirect to /users/me


def test_a_route_nobody_marked_runs_on_the_pool(app):
    app.add_url_rule("/items/<int:item>", "item", lambda item: "x", methods=["GET"])

    assert "item" not in loop_endpoints(app)
    placement = RoutePlacement(app.url_map, loop_endpoints(app))
    assert placement("GET", "/items/7") is True


def test_a_marked_route_with_a_path_variable_runs_on_the_loop(app):
    app.add_url_rule("/items/<int:item>", "item", waits_on_nothing(lambda item: "x"), methods=["GET"])

    placement = RoutePlacement(app.url_map, loop_endpoints(app))
    assert placement("GET", "/items/7") is False
    assert placement("GET", "/items/x") is True  # no match: 404


def test_placements_remembered_stay_bounded(app):
    placement = RoutePlacement(app.url_map, app.extensions[LOOP_ENDPOINTS])
    for number in range(5000):
        assert placement("GET", f"/scan/{number}") is True

    assert len(placement.decided) == 4096


def test_for_application_takes_the_flask_apps_limit_and_placement(app):
    adapter = WsgiOnLoop.for_application(app, threads=3)

    assert adapter.max_body == app.config["MAX_CONTENT_LENGTH"]
    assert isinstance(adapter.runs_on_pool, RoutePlacement)
    assert adapter.runs_on_pool.loop_endpoints is app.extensions[LOOP_ENDPOINTS]


# ------------------------------------------------------------------------------------------------ WouldWait


class QueriesOnce(Recorder):
    """Like a route reading PostgreSQL: the first call of each request meets a query (``must_not_wait``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read()
        self.calls.append((threading.current_thread().name, body))
        must_not_wait()  # raises WouldWait on the event loop, before any side effect
        return super().__call__({**environ, "wsgi.input": io.BytesIO(body)}, start_response)


def test_a_read_that_must_query_moves_to_the_pool_with_its_request_intact():
    app = QueriesOnce()
    (reply,), _session = exchange(
        adapter_for(app),
        request("/hello", method="POST", headers=("X-Request-ID: moved-1",), body=b"payload"),
    )

    assert [body for _, body in app.calls] == [b"payload", b"payload"]
    assert app.calls[0][0] == threading.main_thread().name
    assert app.calls[1][0].startswith("wsgi")
    assert app.environ["HTTP_X_REQUEST_ID"] == "moved-1"
    assert reply.status == 201
    assert reply.body == b"an answer"


@pytest.fixture(params=["json", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path):
    if request.param == "json":
        opened = JsonFileStore(tmp_path / "data.json")
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"), min_size=1, max_size=2, timeout=5)
    yield opened
    opened.close()


def test_postgresql_refuses_to_query_on_the_event_loop_and_the_json_store_answers(store):
    user = store.create_user("alice", HASH)
    with on_event_loop():
        if isinstance(store, PostgresStore):
            with pytest.raises(WouldWait):
                store.find_by_username("alice")
        else:
            assert store.find_by_username("alice") == user
    assert store.find_by_username("alice") == user  # off the loop, both answer


def test_a_read_moved_to_the_pool_is_answered_and_logged_once(app, auth, capfd):
    # With PostgreSQL the first /hello of a session asks the database (nothing is cached yet), so it starts on
    # the loop, meets WouldWait and is answered from the pool: one answer, one access line.
    token = auth.token("alice")
    capfd.readouterr()
    raw = request("/hello", headers=(f"Authorization: Bearer {token}",))

    (reply,), _session = exchange(WsgiOnLoop.for_application(app, threads=2), raw)

    assert reply.status == 200
    assert reply.json() == {"message": "Hello Alice"}
    access_lines = [line for line in capfd.readouterr().out.splitlines() if '"route": "/hello"' in line]
    assert len(access_lines) == 1


# ------------------------------------------------------------------------------------------------ connections


class Held:
    """A connection as the table sees it: open until closed, maybe with a request head begun."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = True
        self.head_begun = False
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table_of(
    *names: str, limit: int = 3, header_timeout: float = 10, keepalive: float | None = None
) -> tuple[ConnectionTable, Clock, list]:
    clock = Clock()
    table = ConnectionTable(limit, header_timeout, clock, keepalive=keepalive)
    held = []
    for name in names:
        connection = Held(name)
        table.held += 1
        table.opened(connection)
        held.append(connection)
        clock.now += 1
    return table, clock, held


def test_a_connection_waiting_longer_than_the_header_timeout_is_closed_and_no_other():
    table, clock, (a, b, c) = table_of("a", "b", "c")
    table.request_started(b)  # b's head arrived: it is answering, not waiting
    clock.now = 100 + 10.5  # a waited 10.5 s, c 8.5 s

    assert table.close_expired() == 1
    assert [a.closed, b.closed, c.closed] == [True, False, False]


def test_a_kept_alive_connection_waits_for_its_next_head_from_the_end_of_its_response():
    table, clock, (a,) = table_of("a")
    table.request_started(a)
    clock.now = 200
    table.request_finished(a)
    clock.now = 209

    assert table.close_expired() == 0
    clock.now = 210.5
    assert table.close_expired() == 1
    assert a.closed


def test_a_kept_alive_connection_silent_for_keepalive_seconds_is_closed_a_new_one_has_the_header_timeout():
    table, clock, (kept, new) = table_of("kept", "new", keepalive=5)  # opened at 100 and 101
    table.request_started(kept)
    table.request_finished(kept)  # at 102: idle from now on

    clock.now = 107.5
    assert table.close_expired() == 1
    assert [kept.closed, new.closed] == [True, False]
    clock.now = 111.5
    assert table.close_expired() == 1
    assert new.closed


def test_the_first_byte_of_a_next_request_gives_an_idle_connection_the_header_timeout():
    table, clock, (kept,) = table_of("kept", keepalive=5)
    table.request_started(kept)
    table.request_finished(kept)  # idle at 101
    clock.now = 105
    table.began(kept)  # a head begun at 105: it has until 115

    clock.now = 114
    assert table.close_expired() == 0
    clock.now = 115.5
    assert table.close_expired() == 1
    assert kept.closed


def test_a_keepalive_longer_than_the_header_timeout_is_cut_to_it():
    table, _clock, _held = table_of(header_timeout=10, keepalive=60)

    assert table.keepalive == 10


def test_at_the_limit_an_idle_connection_makes_room_before_one_waiting_for_its_head():
    table, _clock, (waiting, kept) = table_of("waiting", "kept", limit=2)
    table.request_started(kept)
    table.request_finished(kept)

    assert table.make_room() is True
    assert [waiting.closed, kept.closed] == [False, True]


def test_at_the_limit_the_connection_waiting_longest_makes_room_once():
    table, _clock, (a, b, c) = table_of("a", "b", "c")
    table.request_started(a)

    assert table.make_room() is True
    assert table.make_room() is True  # b's slot is coming free: nothing more is closed
    assert [a.closed, b.closed, c.closed] == [False, True, False]
    table.lost(b)
    assert table.held == 2


def test_with_every_connection_answering_the_next_to_wait_makes_room():
    table, _clock, (a, b) = table_of("a", "b", limit=2)
    table.request_started(a)
    table.request_started(b)

    assert table.make_room() is False
    table.request_finished(b)
    assert b.closed


def test_a_drain_closes_the_idle_connections_and_leaves_a_begun_head_its_time():
    table, _clock, (silent, begun, answering, kept) = table_of(
        "silent", "begun", "answering", "kept", limit=4
    )
    begun.head_begun = True
    table.request_started(answering)
    table.request_started(kept)
    table.request_finished(kept)

    table.close_idle()

    assert [silent.closed, begun.closed, answering.closed, kept.closed] == [True, False, False, True]


# ------------------------------------------------------------------------------------ gunicorn selects it


def test_gunicorn_conf_selects_the_event_loop_worker_class_as_gunicorn_loads_it():
    # Loaded by gunicorn's own Config (harness/gunicorn_config.py), as `gunicorn -c gunicorn.conf.py` does.
    assert gunicorn_settings({}, "worker_class") == {"worker_class": "src.worker.Worker"}
    # GUNICORN_THREADS=1 is the documented way back to gunicorn's sync workers.
    assert gunicorn_settings({"GUNICORN_THREADS": "1"}, "worker_class") == {
        "worker_class": "gunicorn.workers.sync.SyncWorker"
    }


def blocked_signals(pid: int) -> set[int]:
    """The signals the main thread of ``pid`` blocks (SigBlk of /proc/<pid>/status, a hexadecimal mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {number for number in range(1, 65) if mask & (1 << (number - 1))}
    raise AssertionError(f"no SigBlk line in /proc/{pid}/status")


def test_a_serving_worker_leaves_its_stop_signals_unblocked(gunicorn_server, tmp_path):
    # The worker blocks SIGTERM, SIGINT and SIGQUIT while it loads the application and must unblock them
    # once its loop runs: blocked, a SIGTERM from the master (a deploy, a scale-down) is never taken and the
    # master waits out graceful_timeout, then kills it mid-request. The worker answered /healthz: it serves.
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "SECRET_KEY": TEST_SECRET_KEY,
            "DATABASE_URL": None,
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=1,
    )
    (worker,) = server.worker_pids()

    assert blocked_signals(worker) & {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT} == set()

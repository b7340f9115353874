"""The worker's ASGI adapter (src/worker.py), driven in-process through the ASGI interface gunicorn calls.

What reaches the WSGI application (environ, body), what comes back (status, headers, body), where each route
runs (the event loop or the thread pool) and the lifespan exchange. The same adapter under a real gunicorn is
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
from src.lifecycle import WouldWait, must_not_wait, on_event_loop
from src.routes.waits import loop_endpoints, waits_on_nothing
from src.storage import JsonFileStore, PostgresStore
from src.worker import LOOP_ENDPOINTS, ConnectionTable, RoutePlacement, WsgiOnLoop
from tests.conftest import TEST_SECRET_KEY
from tests.storage.workers import HASH


def scope(
    path: str = "/healthz", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1&b=%20",
        "root_path": "",
        "headers": headers or [(b"host", b"api.example")],
        "server": ("10.0.0.5", 8888),
        "client": ("192.0.2.7", 40123),
    }


class Recorder:
    """A WSGI application that records the environ and the thread it ran on, and answers ``reply``."""

    def __init__(self, reply: bytes = b"answer") -> None:
        self.reply = reply
        self.environ: dict = {}
        self.body = b""
        self.thread = None

    def __call__(self, environ, start_response):
        self.environ = environ
        self.body = environ["wsgi.input"].read()
        self.thread = threading.current_thread()
        write = start_response("201 Created", [("Content-Type", "text/plain"), ("X-Seen", "yes")])
        write(b"an ")
        return [self.reply, b""]


def run(adapter: WsgiOnLoop, request: dict, body_messages: list[dict] | None = None) -> list[dict]:
    """One request through the adapter; the messages it sent."""
    incoming = list(body_messages or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(adapter(request, receive, send))
    return sent


def on_loop(method: str, path: str) -> bool:
    return False


def adapter_for(app, *, runs_on_pool=on_loop, max_body: int | None = 1024) -> WsgiOnLoop:
    return WsgiOnLoop(app, threads=2, runs_on_pool=runs_on_pool, max_body=max_body)


def test_the_environ_carries_the_request_as_pep_3333_names_it():
    app = Recorder()
    headers = [
        (b"host", b"api.example"),
        (b"content-type", b"application/json"),
        (b"accept", b"text/plain"),
        (b"accept", b"application/json"),
        (b"x_request_id", b"smuggled"),
    ]
    run(adapter_for(app), scope("/h\u00e9llo", headers=headers))

    environ = app.environ
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/h\u00c3\u00a9llo"  # UTF-8 bytes as latin-1 code points
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["SERVER_NAME"] == "10.0.0.5"
    assert environ["SERVER_PORT"] == "8888"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "192.0.2.7"
    assert environ["REMOTE_PORT"] == "40123"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_ACCEPT"] == "text/plain,application/json"
    assert "HTTP_X_REQUEST_ID" not in environ


def test_the_response_goes_out_whole_with_its_status_and_headers():
    sent = run(adapter_for(Recorder(b"here")), scope())

    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"Content-Type", b"text/plain"), (b"X-Seen", b"yes")],
        },
        {"type": "http.response.body", "body": b"an here"},
    ]


def test_a_body_sent_in_pieces_reaches_the_application_whole():
    app = Recorder()
    pieces = [
        {"type": "http.request", "body": b'{"user', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b'name": "a"}', "more_body": False},
    ]
    run(adapter_for(app), scope(method="POST", headers=[(b"transfer-encoding", b"chunked")]), pieces)

    assert app.body == b'{"username": "a"}'


def test_a_chunked_body_stops_being_read_one_byte_past_the_limit():
    app = Recorder()
    pieces = [{"type": "http.request", "body": b"x" * 600, "more_body": True} for _ in range(4)]
    run(
        adapter_for(app, max_body=1000),
        scope(method="POST", headers=[(b"transfer-encoding", b"chunked")]),
        pieces,
    )

    assert len(app.body) == 1200  # two pieces: past the limit, the other two are never read


def test_a_declared_length_over_the_limit_is_not_read():
    app = Recorder()
    headers = [(b"content-length", b"5000"), (b"content-type", b"application/json")]
    pieces = [{"type": "http.request", "body": b"y" * 5000, "more_body": False}]
    run(adapter_for(app, max_body=1000), scope(method="POST", headers=headers), pieces)

    assert app.body == b""
    assert app.environ["CONTENT_LENGTH"] == "5000"  # from which Flask answers 413


def test_a_client_gone_before_its_body_never_reaches_the_application():
    app = Recorder()
    sent = run(
        adapter_for(app),
        scope(method="POST", headers=[(b"content-length", b"10")]),
        [{"type": "http.disconnect"}],
    )

    assert sent == []
    assert app.environ == {}


def test_marked_routes_run_on_the_loop_and_the_others_on_the_pool():
    app = Recorder()
    url_map = Map(
        [Rule("/healthz", endpoint="healthz"), Rule("/register", endpoint="register", methods=["POST"])]
    )
    adapter = adapter_for(app, runs_on_pool=RoutePlacement(url_map, frozenset({"healthz"})))

    run(adapter, scope("/healthz"))
    assert app.thread is threading.main_thread()
    run(adapter, scope("/register", method="POST", headers=[(b"content-length", b"0")]))
    assert app.thread.name.startswith("wsgi")


def test_an_application_without_a_url_map_runs_everything_on_the_pool():
    app = Recorder()
    run(WsgiOnLoop.for_application(app, threads=2), scope("/healthz"))

    assert app.thread.name.startswith("wsgi")


def test_an_application_that_never_starts_a_response_is_an_error():
    with pytest.raises(RuntimeError, match="start_response"):
        run(adapter_for(lambda environ, start_response: [b"no status"]), scope())


def test_lifespan_startup_and_shutdown_complete():
    adapter = adapter_for(Recorder())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(adapter({"type": "lifespan"}, receive, send))

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_a_websocket_is_refused_without_a_word():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(adapter_for(Recorder())({"type": "websocket"}, None, send))
    assert sent == []


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
    headers = [(b"content-length", b"7"), (b"x-request-id", b"moved-1")]
    sent = run(
        adapter_for(app),
        scope("/hello", method="POST", headers=headers),
        [{"type": "http.request", "body": b"payload", "more_body": False}],
    )

    assert [body for _, body in app.calls] == [b"payload", b"payload"]
    assert app.calls[0][0] == threading.main_thread().name
    assert app.calls[1][0].startswith("wsgi")
    assert app.environ["HTTP_X_REQUEST_ID"] == "moved-1"
    assert sent[0]["status"] == 201
    assert sent[1]["body"] == b"an answer"


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
    # With PostgreSQL every /hello asks the database (its token check is one query), so it starts on the
    # loop, meets WouldWait and is answered from the pool: one answer, one access line.
    token = auth.token("alice")
    capfd.readouterr()
    request = scope("/hello", headers=[(b"authorization", f"Bearer {token}".encode())])

    sent = run(WsgiOnLoop.for_application(app, threads=2), request)

    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"message": "Hello Alice"}
    access_lines = [line for line in capfd.readouterr().out.splitlines() if '"route": "/hello"' in line]
    assert len(access_lines) == 1


# ------------------------------------------------------------------------------------------------ connections


class Held:
    """A connection as the table sees it: open until closed, maybe with a request head begun."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = True
        self.next_request_begun = False
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


def table_of(*names: str, limit: int = 3, header_timeout: float = 10) -> tuple[ConnectionTable, Clock, list]:
    clock = Clock()
    table = ConnectionTable(limit, header_timeout, clock)
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
    table, _clock, (idle, begun, answering) = table_of("idle", "begun", "answering")
    begun.next_request_begun = True
    table.request_started(answering)

    table.close_idle()

    assert [idle.closed, begun.closed, answering.closed] == [True, False, False]


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

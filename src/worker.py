"""The gunicorn worker: an event loop owns the connections, the Flask application answers on it.

gunicorn's own ``asgi`` worker (uvloop when installed) reads and writes every connection of the worker:
keep-alive, pipelining, the request line and header limits, slow clients (a coroutine each, never a thread),
``worker_connections`` as the bound, graceful shutdown and the heartbeat. ``WsgiOnLoop`` hands each complete
request to the WSGI application:

- on the loop itself when the route waits on nothing outside the process (``/healthz``, ``/metrics``, a
  token check answered from memory): no thread hand-off, which costs more than the route itself;
- on the worker's thread pool (``GUNICORN_THREADS`` threads) when the route hashes a password or syncs a
  write (the routes say which, ``src/routes/waits.py``), and when a read on the loop finds that it must
  query the database: the store raises ``WouldWait`` before the query (``src/lifecycle.py``) and the request
  runs again on the pool. argon2 and psycopg release the GIL, so the loop keeps answering meanwhile.

Where a request runs is decided from the rule it matches in the Flask application's URL map, the match Flask
itself makes (``RoutePlacement``), never from the raw path: ``//authenticate`` matches ``/authenticate`` and
runs where it does. Only a match to a route marked to run on the loop runs there; a 404, a 405, a redirect,
an unmarked route, or any request to an application with no URL map runs on the pool.
A call stuck on the loop for longer than ``timeout`` stops the heartbeat and gunicorn replaces the worker.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.workers.gasgi import ASGIWorker
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RoutingException

from .lifecycle import WouldWait, on_event_loop, start_draining

# Where a Flask application keeps the endpoints that run on the event loop (src/routes/waits.py).
LOOP_ENDPOINTS = "flask_api.loop_endpoints"

# Decisions remembered per (method, path): the paths a service really serves are few; past this many, a path
# is matched each time (a scan of random paths must not grow the worker's memory).
_REMEMBERED_PLACEMENTS = 4096

# The two request headers WSGI names without the HTTP_ prefix.
_UNPREFIXED = frozenset({"CONTENT_LENGTH", "CONTENT_TYPE"})

# The signals that stop a worker; see Worker.init_process.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

_Response = tuple[str, list[tuple[str, str]], bytes]


def _call_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> _Response:
    """Run the WSGI application to the end: (status line, headers, whole body)."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = (status, headers)
        return chunks.append  # PEP 3333's write() callable

    result = app(environ, start_response)
    try:
        for data in result:
            if data:
                chunks.append(data)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application returned without calling start_response")
    return started[0], started[1], b"".join(chunks)


class RoutePlacement:
    """Whether a request runs on the thread pool, from the rule it matches (loop: ``loop_endpoints``).

    Matching costs microseconds; the answer depends on the method and the path alone (the URL map matches no
    host), so it is remembered for the paths seen first and a hot route costs one dictionary lookup.
    """

    def __init__(self, url_map: Map, loop_endpoints: frozenset[str]) -> None:
        # Bound once, for the loop's thread only; a MapAdapter keeps no state between matches.
        self.adapter = url_map.bind("localhost")
        self.loop_endpoints = loop_endpoints
        self.decided: dict[tuple[str, str], bool] = {}

    def __call__(self, method: str, path: str) -> bool:
        key = (method, path)
        on_pool = self.decided.get(key)
        if on_pool is None:
            on_pool = self.matches_pool(method, path)
            if len(self.decided) < _REMEMBERED_PLACEMENTS:
                self.decided[key] = on_pool
        return on_pool

    def matches_pool(self, method: str, path: str) -> bool:
        """Match the request as Flask will: anything but a marked route goes to the pool."""
        try:
            rule, _arguments = self.adapter.match(path, method, return_rule=True)
        except (HTTPException, RoutingException):  # 404, 405, a redirect: not a marked route
            return True
        if method == "OPTIONS" and rule.provide_automatic_options:
            return False  # Flask answers it without calling the view
        return rule.endpoint not in self.loop_endpoints


def _everything_on_pool(method: str, path: str) -> bool:
    return True


class WsgiOnLoop:
    """ASGI application running a WSGI application, on the loop or on a thread pool (module docstring).

    The request body is read in full before the call, up to ``max_body`` bytes (``MAX_CONTENT_LENGTH``):
    a larger declared ``Content-Length`` is not read at all and a longer chunked body stops being read one
    byte past the limit, so the application answers 413 and a client can never make the worker buffer more.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        *,
        threads: int,
        runs_on_pool: Callable[[str, str], bool] = _everything_on_pool,
        max_body: int | None,
    ) -> None:
        self.app = app
        # (method, decoded path) -> whether the request goes to the thread pool.
        self.runs_on_pool = runs_on_pool
        self.max_body = max_body
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="wsgi")

    @classmethod
    def for_application(cls, app: Any, threads: int) -> WsgiOnLoop:
        """Wrap a WSGI application; a Flask application lends its URL map, loop endpoints and body limit."""
        extensions = getattr(app, "extensions", None) or {}
        config = getattr(app, "config", None) or {}
        url_map = getattr(app, "url_map", None)
        loop_endpoints = extensions.get(LOOP_ENDPOINTS)
        placement = _everything_on_pool
        if isinstance(url_map, Map) and loop_endpoints is not None:
            placement = RoutePlacement(url_map, loop_endpoints)
        return cls(app, threads=threads, runs_on_pool=placement, max_body=config.get("MAX_CONTENT_LENGTH"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        # Anything else (a WebSocket) is refused: returning without accepting closes it.

    async def lifespan(self, receive: Any, send: Any) -> None:
        """Nothing to start; at shutdown (connections drained), let the pool's threads go."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        environ, framed = self.environ(scope)
        request_body: bytes | None = b""
        if framed:
            request_body = await self.read_body(receive, environ)
            if request_body is None:
                return  # the client went away before its body arrived
            environ["wsgi.input"] = io.BytesIO(request_body)
        if self.runs_on_pool(scope["method"], scope["path"]):
            status, headers, body = await self.on_pool(environ)
        else:
            try:
                with on_event_loop():
                    status, headers, body = _call_wsgi(self.app, environ)
            except WouldWait:  # the store was about to query its database: run it where waiting is fine
                # The first attempt changed its environ: a fresh one, built again only on this rare path.
                environ = self.environ(scope)[0]
                environ["wsgi.input"] = io.BytesIO(request_body)
                status, headers, body = await self.on_pool(environ)
        await send(
            {
                "type": "http.response.start",
                "status": int(status[:3]),
                "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def on_pool(self, environ: dict[str, Any]) -> _Response:
        """Run the application on the thread pool; the loop serves other connections meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, _call_wsgi, self.app, environ)

    async def read_body(self, receive: Any, environ: dict[str, Any]) -> bytes | None:
        """The request body, or at most ``max_body + 1`` bytes of it; None when the client disconnected."""
        limit = self.max_body
        declared = environ.get("CONTENT_LENGTH")
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            return b""  # not read: the application refuses it from the declared length
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
            if limit is not None and size > limit:
                # Chunked and too long: what was read is enough for the application to answer 413.
                break
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def environ(scope: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The WSGI environ of an ASGI HTTP request, and whether the request has a body to read."""
        server = scope.get("server") or ("", 0)
        client = scope.get("client")
        query = scope["query_string"]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": scope.get("root_path", ""),
            # WSGI carries the decoded path as latin-1 code points of its UTF-8 bytes.
            "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
            "REMOTE_ADDR": client[0] if client else "",
            "REMOTE_PORT": str(client[1]) if client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        framed = False
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if "_" in name:
                # "X_Forwarded_For" and "X-Forwarded-For" would be one WSGI key: drop the ambiguous one.
                continue
            value = raw_value.decode("latin-1")
            key = name.upper().replace("-", "_")
            if key in _UNPREFIXED:
                framed = framed or key == "CONTENT_LENGTH"
            else:
                if key == "TRANSFER_ENCODING":
                    framed = True
                key = "HTTP_" + key
            if key in environ:
                environ[key] += "," + value
            else:
                environ[key] = value
        return environ, framed


class Worker(ASGIWorker):
    """gunicorn's asyncio worker serving the WSGI application through ``WsgiOnLoop``."""

    # gunicorn.conf.py's post_worker_init leaves SIGTERM to this class.
    drains_on_sigterm = True

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """``threads`` sizes the pool of offloaded requests here: nothing to warn about."""

    def init_process(self) -> None:
        # The loop takes its signals only while it runs: a SIGTERM sent while the application loads (a
        # deploy right after a restart) would be lost, and the master would wait out graceful_timeout for
        # this worker. Held back until the loop runs, it is delivered then.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        super().init_process()

    async def _serve(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        await super()._serve()

    def load_wsgi(self) -> None:
        self.wsgi = self.app.wsgi()
        self.asgi = WsgiOnLoop.for_application(self.wsgi, self.cfg.threads)

    def handle_exit_signal(self) -> None:
        """SIGTERM: /readyz answers 503 from now on, then gunicorn's graceful stop."""
        start_draining()
        super().handle_exit_signal()

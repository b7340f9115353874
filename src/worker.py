"""The gunicorn worker: an event loop owns the connections, the Flask application answers on it.

gunicorn's asyncio worker (``gasgi``, uvloop when installed) gives the process: the event loop, signals, the
heartbeat, the master's settings. The connections are this project's own: ``Worker.accept`` takes them,
``src.http1.Connection`` speaks HTTP/1.1 on each (llhttp parses, through ``httptools``), and ``WsgiOnLoop``
hands each complete request to the WSGI application:

- on the loop itself when the route waits on nothing outside the process (``/healthz``, ``/metrics``, a
  token check answered from memory): no thread hand-off, which costs more than the route itself;
- on the worker's thread pool (``GUNICORN_THREADS`` threads) when the route hashes a password or syncs a
  write (the routes say which, ``src/routes/waits.py``), and when a read on the loop finds that it must
  query the database or parse a whole JSON file: the store raises ``WouldWait`` before it
  (``src/lifecycle.py``) and the request runs again on the pool. argon2 and psycopg release the GIL, so the
  loop keeps answering meanwhile.

Where a request runs is decided from the rule it matches in the Flask application's URL map, the match Flask
itself makes (``RoutePlacement``), never from the raw path: ``//authenticate`` matches ``/authenticate`` and
runs where it does. Only a match to a route marked to run on the loop runs there; a 404, a 405, a redirect,
an unmarked route, or any request to an application with no URL map runs on the pool.
A call stuck on the loop for longer than ``timeout`` stops the heartbeat and gunicorn replaces the worker.

The worker accepts its connections itself (``Worker.accept``) rather than through ``loop.create_server``,
whose accept loop has no limit and no hook. A worker holds at most ``worker_connections`` (fewer when the
descriptor limit is lower), and ``ConnectionTable`` knows which of them wait for a request, and since when:

- a connection that has not sent a complete request head within ``header_timeout`` is closed, first request
  or not (a silent connection, a slow-header client); a kept-alive one that sends nothing for
  ``keepalive`` seconds after its last response is closed too;
- at the limit, a new connection takes the place of the one that has waited longest for a head; when every
  held connection has a request in hand, the worker stops accepting until one closes, and the other workers
  (or the backlog) take the new ones. Probes thus stay answered under thousands of silent connections;
- running out of descriptors (EMFILE) is logged at most once a minute and handled as the limit is;
- SIGTERM closes at once the connections that have not begun a request; a request in hand (or a head begun)
  finishes and its response says ``Connection: close``; the worker exits as soon as the last one is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.workers.gasgi import ASGIWorker
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RoutingException

from .http1 import Connection, HeadLimits, Response, connection_factory
from .lifecycle import start_draining

# Where a Flask application keeps the endpoints that run on the event loop (src/routes/waits.py).
LOOP_ENDPOINTS = "flask_api.loop_endpoints"

# Decisions remembered per (method, path): the paths a service really serves are few; past this many, a path
# is matched each time (a scan of random paths must not grow the worker's memory).
_REMEMBERED_PLACEMENTS = 4096

# The signals that stop a worker; see Worker.init_process.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

# Seconds a connection may take to send a complete request head (GUNICORN_HEADER_TIMEOUT, gunicorn.conf.py).
DEFAULT_HEADER_TIMEOUT = 10

# Descriptors kept free for everything but client connections: the thread pool's data files and database
# connections, the log, the heartbeat file, the event loop's own.
_RESERVED_DESCRIPTORS = 64

# accept() errors that mean "out of descriptors or memory": the connection stays in the backlog.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_OUT_OF_RESOURCES_LOG_INTERVAL = 60.0


def _call_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Response:
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
        if method == "OPTIONS" and rule.provide_automatic_options:  # type: ignore[attr-defined]
            return False  # Flask answers it without calling the view
        return rule.endpoint not in self.loop_endpoints


def _everything_on_pool(method: str, path: str) -> bool:
    return True


class WsgiOnLoop:
    """The WSGI application as the worker's connections call it: on the loop, or on a thread pool.

    ``runs_on_pool`` says where a request goes (``RoutePlacement`` for a Flask application); ``call`` runs the
    application on the calling thread (the loop), ``submit`` on the pool. The request body reaches the
    application whole, read by the connection up to ``max_body`` bytes (``MAX_CONTENT_LENGTH``): a larger
    declared ``Content-Length`` is not read at all and a longer chunked body stops being read one byte past
    the limit, so the application answers 413 and a client can never make the worker buffer more.
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

    def call(self, environ: dict[str, Any]) -> Response:
        """Run the application here (the loop): the caller handles ``WouldWait``."""
        return _call_wsgi(self.app, environ)

    def submit(self, environ: dict[str, Any]) -> asyncio.Future[Response]:
        """Run the application on the thread pool; the loop serves other connections meanwhile."""
        return asyncio.get_running_loop().run_in_executor(self.pool, _call_wsgi, self.app, environ)


class ConnectionTable:
    """The connections one worker holds: how many, and which wait for a request, since when.

    Two queues, each in the order its connections began to wait, so that the ones to close are always at the
    front: ``waiting`` for a request head (a new connection, or a head begun), closed after
    ``header_timeout``; ``idle`` for kept-alive connections between requests, closed after ``keepalive``
    (GUNICORN_KEEPALIVE, at most ``header_timeout``) and moved to ``waiting`` by the first byte of their next
    request.
    """

    def __init__(
        self, limit: int, header_timeout: float, clock: Callable[[], float], keepalive: float | None = None
    ) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.keepalive = header_timeout if keepalive is None else min(keepalive, header_timeout)
        self.clock = clock
        # Accepted and not yet lost (a slot is taken at accept(), before the protocol exists).
        self.held = 0
        self.waiting: OrderedDict[Connection, float] = OrderedDict()
        self.idle: OrderedDict[Connection, float] = OrderedDict()
        # Closed by the worker, not yet lost: their slots are about to come free.
        self.closing: set[Connection] = set()
        # The worker is at the limit with new connections in the backlog, and nothing could be closed for them
        # (the held connections were all answering): the next one to wait makes room.
        self.wants_room = False
        self.lost_one: Callable[[], None] = lambda: None

    def opened(self, connection: Connection) -> None:
        self.waiting[connection] = self.clock()
        if self.wants_room:
            self.make_room()

    def began(self, connection: Connection) -> None:
        """A byte of a request has come: an idle connection now waits for the rest of the head."""
        if self.idle.pop(connection, None) is not None:
            self.waiting[connection] = self.clock()

    def request_started(self, connection: Connection) -> None:
        self.waiting.pop(connection, None)
        self.idle.pop(connection, None)

    def request_finished(self, connection: Connection) -> None:
        """Every request of the connection is answered: it waits for the next one (its head, if begun)."""
        if connection.open and connection not in self.closing:
            (self.waiting if connection.head_begun else self.idle)[connection] = self.clock()
            if self.wants_room:
                self.make_room()

    def lost(self, connection: Connection) -> None:
        self.waiting.pop(connection, None)
        self.idle.pop(connection, None)
        self.closing.discard(connection)
        self.held -= 1
        self.wants_room = False
        self.lost_one()

    def close(self, connection: Connection) -> None:
        self.waiting.pop(connection, None)
        self.idle.pop(connection, None)
        self.closing.add(connection)
        connection.close()

    def close_expired(self) -> int:
        """Close the connections that waited ``header_timeout`` for a head or ``keepalive`` idle; how many."""
        now = self.clock()
        closed = 0
        for queue, timeout in ((self.waiting, self.header_timeout), (self.idle, self.keepalive)):
            started_before = now - timeout
            while queue:
                connection, since = next(iter(queue.items()))
                if since > started_before:
                    break
                self.close(connection)
                closed += 1
        return closed

    def close_idle(self) -> None:
        """Close every connection that has not begun a request (a drain): idle, or new and silent."""
        for connection in [*self.idle, *(c for c in self.waiting if not c.head_begun)]:
            self.close(connection)

    def make_room(self) -> bool:
        """At the limit: close the connection idle longest, else the one waiting longest for a head; False
        if none waits. Nothing more is closed while a slot is already coming free.
        """
        if self.closing:
            return True
        queue = self.idle or self.waiting
        if not queue:
            self.wants_room = True
            return False
        self.wants_room = False
        self.close(next(iter(queue)))
        return True


def connection_limit(worker_connections: int) -> int:
    """``worker_connections``, lowered to what the descriptor limit leaves for client connections."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return worker_connections
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (macOS): count nothing, the reserve is generous
        open_now = 0
    return max(1, min(worker_connections, soft - open_now - _RESERVED_DESCRIPTORS))


class Worker(ASGIWorker):
    """gunicorn's asyncio worker, accepting its own connections, serving the WSGI application through
    ``WsgiOnLoop`` (module docstring)."""

    # gunicorn.conf.py's post_worker_init leaves SIGTERM to this class.
    drains_on_sigterm = True
    # Set by gunicorn.conf.py's post_fork from GUNICORN_HEADER_TIMEOUT.
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """``threads`` sizes the pool of offloaded requests here: nothing to warn about."""

    def init_process(self) -> None:
        # The loop takes its signals only while it runs: a SIGTERM sent while the application loads (a
        # deploy right after a restart) would be lost, and the master would wait out graceful_timeout for
        # this worker. Held back until the loop runs, it is delivered then.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        super().init_process()

    def load_wsgi(self) -> None:
        self.wsgi = self.app.wsgi()
        self.application = WsgiOnLoop.for_application(self.wsgi, self.cfg.threads)

    async def _serve(self) -> None:
        """Accept, serve and beat until told to stop, then drain."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        limit = connection_limit(self.worker_connections)
        if limit < self.worker_connections:
            self.log.warning(
                "worker_connections lowered from %d to %d: the descriptor limit (ulimit -n) leaves no more",
                self.worker_connections,
                limit,
            )
        keepalive = self.cfg.keepalive
        self.connections = ConnectionTable(limit, self.header_timeout, loop.time, keepalive=keepalive)
        self.connections.lost_one = self.resume_accepting
        self.listeners = [listener.sock for listener in self.sockets]
        self.ssl_context = self._get_ssl_context()
        self.new_connection = connection_factory(
            self.application,
            self.connections,
            HeadLimits.from_config(self.cfg),
            worker=self,
            keepalive=keepalive > 0,
            scheme="https" if self.ssl_context else "http",
        )
        self.accepting = False
        self.out_of_resources = 0
        self.out_of_resources_logged = -_OUT_OF_RESOURCES_LOG_INTERVAL
        for listener in self.listeners:
            listener.setblocking(False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        self.resume_accepting()
        self.log.info("Listening on %s, at most %d connections", ", ".join(map(str, self.sockets)), limit)
        # alive turns False on SIGTERM and at max_requests (Connection.respond); stopping wakes the loop.
        while self.alive and not self.stopping.is_set():
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            self.connections.close_expired()
            # A second between beats; SIGTERM wakes it at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
        await self.drain()

    # ------------------------------------------------------------------------------------------ accepting

    def resume_accepting(self) -> None:
        """Watch the listeners again, unless stopping or still at the limit."""
        table = self.connections
        if self.accepting or not self.alive or table.held >= table.limit:
            return
        self.accepting = True
        for listener in self.listeners:
            self.loop.add_reader(listener.fileno(), self.accept, listener)

    def pause_accepting(self) -> None:
        """Leave new connections in the backlog, for another worker or for later."""
        if not self.accepting:
            return
        self.accepting = False
        for listener in self.listeners:
            self.loop.remove_reader(listener.fileno())

    def accept(self, listener: socket.socket) -> None:
        """The listener is readable: accept while there is room (the backlog keeps the rest)."""
        table = self.connections
        if table.held >= table.limit:
            # Readable at the limit: a connection waits in the backlog. Make room for it, and accept nothing
            # until a slot is free (Connection.connection_lost resumes).
            self.pause_accepting()
            table.make_room()
            return
        while table.held < table.limit:
            try:
                client, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self.ran_out_of_resources(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while in the backlog
                # Anything else: say so and try again shortly, rather than spin on a readable listener.
                self.log.exception("unexpected error from accept()")
                self.pause_accepting()
                self.loop.call_later(0.1, self.resume_accepting)
                return
            table.held += 1
            if client.family in (socket.AF_INET, socket.AF_INET6):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.loop.create_task(self.connect(client))

    def ran_out_of_resources(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: log it now and then, and free a slot as at the limit."""
        self.out_of_resources += 1
        now = self.loop.time()
        if now - self.out_of_resources_logged >= _OUT_OF_RESOURCES_LOG_INTERVAL:
            self.log.warning(
                "accept() failed %d times since the last message (%s); holding %d connections",
                self.out_of_resources,
                errno.errorcode.get(exc.errno or 0, exc.errno),
                self.connections.held,
            )
            self.out_of_resources_logged = now
            self.out_of_resources = 0
        self.pause_accepting()
        if not self.connections.make_room():
            # Every connection has a request in hand: try again shortly.
            self.loop.call_later(0.1, self.resume_accepting)

    async def connect(self, client: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.new_connection, client, ssl=self.ssl_context)
        except OSError as exc:  # the client went away during the handshake
            self.log.debug("connection dropped before it started: %s", exc)
            client.close()
            self.connections.held -= 1
            self.resume_accepting()

    # ------------------------------------------------------------------------------------------- stopping

    def handle_exit_signal(self) -> None:
        """SIGTERM: /readyz answers 503 from now on, then the graceful stop (``drain``)."""
        start_draining()
        super().handle_exit_signal()
        self.stop_now()

    def handle_quit_signal(self) -> None:
        super().handle_quit_signal()
        self.stop_now()

    def stop_now(self) -> None:
        """Stop accepting, close the idle connections, wake the main loop."""
        self.pause_accepting()
        self.connections.close_idle()
        self.stopping.set()

    async def drain(self) -> None:
        """Let the requests in hand finish (their responses say ``Connection: close``), then exit."""
        self.log.info("Worker shutting down...")
        self.stop_now()
        table = self.connections
        deadline = self.loop.time() + self.cfg.graceful_timeout
        # A connection answered during the drain is closed by src.http1 after its response (alive is
        # False: the response says Connection: close).
        while table.held and not self._quick_shutdown and self.loop.time() < deadline:
            table.close_expired()  # a head begun before the signal gets the header timeout, no more
            self.notify()  # the master's timeout still applies to a draining worker
            await asyncio.sleep(0.05)
        if table.held:
            self.log.warning("Forcing close of %d connections", table.held)
        self.application.pool.shutdown(wait=False)

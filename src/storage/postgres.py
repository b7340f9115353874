"""Users kept in PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

Process model (gunicorn forks workers from a master):

* Construction opens no pool. It checks the schema's version over one short connection that is closed
  before it returns, and applies the pending migrations when there are any (src/storage/schema.py, under the
  schema lock), so the store may be built in the master before ``fork``. ``src.create_app`` builds it when
  ``src:application`` is first loaded: in each worker after fork (gunicorn's default), or once in the master
  with ``--preload``; both are safe. When the database is down the
  construction logs one line and succeeds; the schema is then created on first use.
* The pool is opened lazily on first use, in the process that uses it, and is keyed by ``os.getpid()``: a
  worker never uses sockets inherited from its parent.
* The token check of each request (``find_session_user``) and a lookup by id (``find_by_id``: the user of a
  refreshed session) are served from a per-process cache of users and live sessions when they can be:
  triggers on ``users`` and ``sessions`` send ``NOTIFY`` on every change, each process listens on one extra
  connection, and before every lookup it reads what has arrived there (a non-blocking read, no round trip)
  and drops the users and sessions named. A thread of the process also waits on that connection, applies
  each notification as it comes and answers each revocation's token: a change made through the store that
  can revoke a token (logout, password change, deletion, disabling, ending a user's sessions, a refresh
  token used twice) returns only once every listening process has answered, or has had its listening
  session ended after CONFIRM_TIMEOUT_SECONDS, so from the answer of the request that made it on, no
  process accepts the old token. Until that connection listens, and from the moment it is lost, the cache
  is emptied and every lookup goes to the database, so a change is never missed; a change made by hand
  (``psql``) is seen once its notification arrives. Entries also expire after ``USER_CACHE_TTL_SECONDS``.
* With ``password_file`` (DATABASE_PASSWORD_FILE) the password is read from that file for every new
  connection, never kept: a password rotated in the database and in the file (a Kubernetes Secret volume
  follows its Secret) is picked up without a restart, while the open connections keep working.
* Other lookups cost one query on a pooled autocommit connection. Connections are not checked on every
  checkout (that would double the cost of a lookup): after a connection error the idle connections are
  checked (``pool.check()``) and an idempotent call is retried once, so a restarted database is picked up
  without a failed request; writes check their connection before running. While the database is down a call
  raises StoreUnavailable after ``timeout`` seconds, and once the pool has seen connection errors the next
  calls fail within 0.75 s; the pool reconnects by itself within about half a second of the return.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..lifecycle import must_not_wait
from .base import Counts, RefreshRefused, Session, StoreUnavailable, User, UsernameTaken, UserStore
from .schema import Connect, MigrationFailed, baseline_present, schema_current, upgrade

log = logging.getLogger(__name__)
# psycopg_pool logs every failed reconnection attempt (two lines, twice a second per worker during an
# outage); this module logs one line per worker every LOG_INTERVAL_SECONDS instead. Logging configuration
# that sets the level of "psycopg.pool" explicitly still wins.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# Every table of the schema with what the application does to its rows: ``python -m src.migrate`` grants the
# application's role exactly this, and refuses to finish while a table of the schema is missing here. A
# SELECT ... FOR UPDATE or FOR SHARE needs UPDATE too; refresh_tokens rows go with their session (ON DELETE
# CASCADE, which runs with the owner's rights).
TABLE_PRIVILEGES = {
    "users": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "login_failures": ("SELECT", "INSERT", "DELETE"),
    "store_identity": ("SELECT",),
    "sessions": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "refresh_tokens": ("SELECT", "INSERT", "UPDATE"),
}
USERS_CHANNEL = "flask_api_users"
SESSIONS_CHANNEL = "flask_api_sessions"
# A revocation (a logout, a password change, ...) sends a random token on SYNC_CHANNEL in its transaction and
# waits, before it returns, until every listening session has sent that token back on CONFIRM_CHANNEL, which
# each does once its process has applied everything that came before it.
SYNC_CHANNEL = "flask_api_sync"
CONFIRM_CHANNEL = "flask_api_confirm"
_SESSIONS_RELNAME = SESSIONS_CHANNEL.encode()
_SYNC_RELNAME = SYNC_CHANNEL.encode()
LISTENER_APPLICATION_NAME = "flask-api-user-cache"
USER_CACHE_MAX_ENTRIES = 10_000
# Bounds how long an entry can outlive a change whose notification never came (a connection cut silently,
# with no reset; TCP keepalives on the listening connection notice that within about 25 s).
USER_CACHE_TTL_SECONDS = 60.0
# After a failed attempt to listen, lookups go to the database and the next attempt waits this long.
LISTEN_RETRY_SECONDS = 5.0
# A listening session that has not confirmed a revocation within this time is ended (pg_terminate_backend,
# which waits up to as long again for the end): its process then stops serving from its cache.
CONFIRM_TIMEOUT_SECONDS = 1.0
# psycopg_pool retries a failed connection with an exponential back-off (1 s, 2 s, 4 s, ...) until this
# limit, then gives the slot up; the next request starts a fresh attempt at once. A short limit keeps the
# back-off short, so the pool is back within about half a second of the database.
RECONNECT_TIMEOUT_SECONDS = 0.5
READY_TIMEOUT_SECONDS = 2.0
# Once the pool has failed to reach the database, later calls wait this long for a connection instead of the
# full timeout, so an outage answers 503 quickly rather than holding every worker (and the liveness probe
# behind them) for seconds. It is longer than RECONNECT_TIMEOUT_SECONDS, the longest wait for the next
# connection attempt, so the first call after the database returns succeeds.
FAIL_FAST_TIMEOUT_SECONDS = 0.75
LOG_INTERVAL_SECONDS = 10.0
BIGINT_MAX = 2**63 - 1

T = TypeVar("T")


def _secrets_of(url: str) -> list[str]:
    """The password of ``url`` as written and decoded, to be removed from any message."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)


def password_kwargs(password_file: str | None) -> dict[str, Any]:
    """``{"password": ...}`` read from ``password_file`` now (nothing without a file).

    A file that cannot be read counts as a connection failure, so it maps to StoreUnavailable like one.
    """
    if password_file is None:
        return {}
    try:
        with open(password_file, encoding="utf-8") as stream:
            password = stream.read().rstrip("\r\n")
    except OSError as exc:
        raise psycopg.OperationalError(f"cannot read the password file: {exc.strerror}") from None
    if not password:
        raise psycopg.OperationalError("the password file is empty")
    return {"password": password}


def describe_error(exc: BaseException, url: str) -> str:
    """First line of an error message, with the URL's password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def connector(url: str, timeout: float = 5.0, password_file: str | None = None) -> Connect:
    """A function opening one autocommit connection to ``url`` (the password file read at each call)."""
    return lambda: psycopg.connect(
        url, autocommit=True, connect_timeout=max(1, round(timeout)), **password_kwargs(password_file)
    )


def create_schema(url: str, timeout: float = 5.0, password_file: str | None = None) -> list[str]:
    """Apply the pending migrations (src/storage/schema.py); the versions applied now.

    StoreUnavailable if the database cannot be reached, MigrationFailed (one of those) if a migration fails.
    """
    connect = connector(url, timeout, password_file)
    try:
        with connect() as conn:
            # Look first: a role without DDL rights (schema migrated by an administrator with python -m
            # src.migrate) has nothing to do, and could not take the steps anyway.
            if schema_current(conn):
                return []
        return upgrade(connect)
    except MigrationFailed:
        raise
    except psycopg.Error as exc:
        raise StoreUnavailable(f"database unavailable: {describe_error(exc, url)}") from None


def _user(row: tuple[int, str, str] | None) -> User | None:
    return User(*row) if row is not None else None


class UserCache:
    """Users by id and live sessions by id for one process, trusted only while this process listens for
    changes to ``users`` and ``sessions``.

    A thread waits on the listening connection: it applies each notification as it arrives (forgets the users
    and sessions named) and then confirms each revocation's token (``SYNC_CHANNEL``), so that a revocation
    made through the store returns only once every listening process has applied it. A lookup also reads
    what has arrived first, without waiting and without a round trip, which notices a lost connection before
    anything is served from the cache. ``remember`` keeps what was read
    from the database, unless a notification was read or the listening connection changed since the lookup
    that missed (the generation moves on both), so that an answer read before a change is never kept after
    it. Not listening (not yet, or the connection was lost): nothing is served from the cache, and
    ``remember`` starts listening again (at most every LISTEN_RETRY_SECONDS) once a query has just shown
    that the database answers.
    """

    def __init__(self, url: str, connect_timeout: float, password_file: str | None = None) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._password_file = password_file
        self._conn: psycopg.Connection | None = None
        self._pid: int | None = None
        self._generation = 0
        self._entries: dict[int, tuple[User, float]] = {}
        self._sessions: dict[str, tuple[int, float]] = {}
        self._next_attempt = 0.0
        self._ending = ""  # why the server is ending the listening session, once it has said so
        self._closed = False
        self._confirmations: list[bytes] = []  # revocation tokens applied, to send back
        self._wake: int | None = None  # the write end of the pipe that wakes the listening thread
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        """Whether this process holds a listening connection (its losses are noticed at the next lookup)."""
        return self._conn is not None and self._pid == os.getpid()

    def lookup(self, user_id: int) -> tuple[User | None, int | None]:
        """(the cached user or None, the listening generation to pass to ``remember``, or None)."""
        return self._lookup(self._entries, user_id)

    def lookup_session(self, session_id: str) -> tuple[int | None, int | None]:
        """(the user id of the cached live session or None, the generation for ``remember_session``)."""
        return self._lookup(self._sessions, session_id)

    def lookup_session_user(self, user_id: int, session_id: str) -> tuple[User | None, int | None]:
        """(the cached user, or None unless the session is cached live for that same user; the generation
        for ``remember`` and ``remember_session``), with one read of the notifications: the token check."""
        with self._lock:
            if not self._drain():
                return None, None
            user = self._entries.get(user_id)
            session = self._sessions.get(session_id)
            if (
                user is not None
                and session is not None
                and session[0] == user_id
                and min(user[1], session[1]) > time.monotonic()
            ):
                return user[0], self._generation
            return None, self._generation

    def _lookup(self, entries: dict, key: object) -> tuple:
        with self._lock:
            if not self._drain():
                return None, None
            entry = entries.get(key)
            if entry is not None:
                if entry[1] > time.monotonic():
                    return entry[0], self._generation
                del entries[key]
            return None, self._generation

    def generation(self) -> int | None:
        """The listening generation after applying what has arrived, or None when not listening."""
        with self._lock:
            return self._generation if self._drain() else None

    def remember(self, user: User, generation: int | None) -> None:
        """Keep ``user``, read after a lookup that returned ``generation``; or start listening."""
        self._remember(self._entries, user.id, user, generation)

    def remember_session(self, session_id: str, user_id: int, generation: int | None) -> None:
        """Keep the live session ``session_id`` of ``user_id``, read after a lookup that returned
        ``generation``; or start listening."""
        self._remember(self._sessions, session_id, user_id, generation)

    def listen_after_query(self) -> None:
        """Start listening, once a query has just shown that the database answers (at most every
        LISTEN_RETRY_SECONDS)."""
        with self._lock:
            self._listen_if_due()

    def _listen_if_due(self) -> None:
        # Closed: a request still in flight on a closed store must not open a connection nobody will close.
        if not self._closed and not self.listening and time.monotonic() >= self._next_attempt:
            self._listen()

    def _remember(self, entries: dict, key: object, value: object, generation: int | None) -> None:
        with self._lock:
            if generation is None:
                self._listen_if_due()
                return
            if generation != self._generation or not self.listening:
                return
            if len(entries) >= USER_CACHE_MAX_ENTRIES:
                del entries[next(iter(entries))]  # the oldest
            entries[key] = (value, time.monotonic() + USER_CACHE_TTL_SECONDS)

    def forget(self, user_id: int) -> None:
        """Drop one user at once (changed by this process: its own notification comes a moment later)."""
        with self._lock:
            self._entries.pop(user_id, None)
            self._generation += 1  # a lookup that read the user before the change must not keep it

    def forget_sessions(self, session_ids: Iterable[str] = (), *, every: bool = False) -> None:
        """Drop sessions ended by this process at once (its own notifications come a moment later)."""
        with self._lock:
            if every:
                self._sessions.clear()
            for session_id in session_ids:
                self._sessions.pop(session_id, None)
            self._generation += 1

    def close(self) -> None:
        """Stop listening for good (a connection inherited from a parent process is left alone)."""
        with self._lock:
            self._closed = True
            self._stop()

    def _drain(self) -> bool:
        """Apply the notifications received so far; False, and the cache emptied, when not listening."""
        conn = self._conn
        if conn is None or self._pid != os.getpid():
            return False
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()  # reads what has arrived; notifies() parses it
            while (notice := pgconn.notifies()) is not None:
                if notice.relname == _SYNC_RELNAME:
                    # Everything before it is applied: the listening thread confirms it.
                    self._confirmations.append(notice.extra)
                    continue
                self._generation += 1
                payload = notice.extra.decode()
                if notice.relname == _SESSIONS_RELNAME:
                    if payload == "*":
                        self._sessions.clear()
                    else:
                        self._sessions.pop(payload, None)
                elif payload == "*" or not payload.isdigit():
                    self._entries.clear()
                else:
                    self._entries.pop(int(payload), None)
            if pgconn.status != psycopg.pq.ConnStatus.OK or self._ending:
                raise psycopg.OperationalError(self._ending or "connection lost")
            if self._confirmations and self._wake is not None:
                # Read here (a request's lookup): the thread confirms them. A full pipe: it is woken already.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake, b"!")
        except psycopg.Error as exc:
            self._lost(exc)
            return False
        return True

    def _lost(self, exc: psycopg.Error) -> None:
        """Stop listening after ``exc`` on the listening connection: lookups go to the database."""
        reason = describe_error(exc, self._url)
        log.warning("user cache: stopped listening (%s); lookups go to the database", reason)
        self._stop()
        self._next_attempt = 0.0  # try again after the next successful query

    def _listen(self) -> None:
        conn = None
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(self._connect_timeout)),
                application_name=LISTENER_APPLICATION_NAME,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                **password_kwargs(self._password_file),
            )
            if not baseline_present(conn):
                # A schema created before the triggers existed: no notifications would ever come.
                raise psycopg.OperationalError("the users triggers are missing: run python -m src.migrate")
            conn.execute(f"LISTEN {USERS_CHANNEL}")
            conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
            conn.execute(f"LISTEN {SYNC_CHANNEL}")
            # A server ending the session (shutdown, pg_terminate_backend) first sends a FATAL message, which
            # libpq hands to the notice handlers of an idle connection when it parses the input; the end of
            # the stream is only read by the next call. Taking the message as the loss leaves no lookup
            # served from the cache in between.
            conn.add_notice_handler(self._on_notice)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            self._next_attempt = time.monotonic() + LISTEN_RETRY_SECONDS
            reason = describe_error(exc, self._url)
            log.warning("user cache: cannot listen (%s); lookups go to the database", reason)
            return
        self._conn, self._pid, self._ending = conn, os.getpid(), ""
        self._generation += 1
        self._entries.clear()
        self._sessions.clear()
        self._confirmations.clear()
        wake_r, self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        threading.Thread(
            target=self._watch, args=(conn, wake_r, self._wake), name="user-cache-listener", daemon=True
        ).start()

    def _watch(self, conn: psycopg.Connection, wake_r: int, wake_w: int) -> None:
        """The listening thread: apply what arrives as it arrives and confirm each revocation applied."""
        try:
            # poll, not select: a worker holding over 1,024 connections has descriptors select cannot take.
            poller = select.poll()
            poller.register(wake_r, select.POLLIN)
            try:
                poller.register(conn.pgconn.socket, select.POLLIN)
            except psycopg.Error:
                return  # closed already: _stop has run
            while True:
                readable = {fd for fd, _events in poller.poll()}
                with self._lock:
                    if self._conn is not conn:
                        return
                    if wake_r in readable:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                    if not self._drain():
                        return
                    while self._confirmations:
                        tokens, self._confirmations = self._confirmations, []
                        if not all(self._confirm(conn, token) for token in tokens) or not self._drain():
                            return
        finally:
            with self._lock:
                if self._wake == wake_w:
                    self._wake = None
            os.close(wake_r)
            os.close(wake_w)

    def _confirm(self, conn: psycopg.Connection, token: bytes) -> bool:
        """Send ``token`` back on CONFIRM_CHANNEL over the listening connection itself (its backend's pid
        names this process to the revocation waiting for it). libpq's own calls, so that the notifications
        arriving meanwhile stay queued for ``_drain``. False, and listening stopped, when that fails."""
        pgconn = conn.pgconn
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        try:
            pgconn.send_query_params(b"SELECT pg_notify($1, $2)", [CONFIRM_CHANNEL.encode(), token])
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLOUT)
            while pgconn.flush():
                if time.monotonic() > deadline:
                    raise psycopg.OperationalError("a confirmation could not be sent")
                poller.poll(CONFIRM_TIMEOUT_SECONDS * 1000)
            poller.modify(pgconn.socket, select.POLLIN)
            while pgconn.is_busy():
                if time.monotonic() > deadline:
                    raise psycopg.OperationalError("no answer to a confirmation")
                poller.poll(CONFIRM_TIMEOUT_SECONDS * 1000)
                pgconn.consume_input()
            while (result := pgconn.get_result()) is not None:
                if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                    message = (result.error_message or b"").decode(errors="replace").strip()
                    raise psycopg.OperationalError(message or "a confirmation failed")
        except psycopg.Error as exc:
            self._lost(exc)
            return False
        return True

    def _on_notice(self, diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.severity_nonlocalized in ("ERROR", "FATAL", "PANIC"):
            self._ending = diagnostic.message_primary or "the server ended the session"

    def _stop(self) -> None:
        conn, self._conn = self._conn, None
        self._entries.clear()
        self._sessions.clear()
        self._confirmations.clear()
        if conn is not None and self._pid == os.getpid():
            if self._wake is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake, b"!")  # the listening thread ends
                self._wake = None
            conn.close()
        # A connection opened by a parent before fork is dropped without a word to the server, which would
        # end the parent's session.
        self._pid = None


def _refresh_key(session_id: str, generation: int) -> str:
    """The refresh_tokens row of a session's current refresh token: its session and generation."""
    return f"{session_id}.{generation}"


class PostgresStore(UserStore):
    """Users in PostgreSQL at ``url``; see the module docstring for the process and outage behaviour."""

    def __init__(
        self,
        url: str,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 5.0,
        *,
        user_cache: bool = True,
        password_file: str | None = None,
    ) -> None:
        self._url = url
        self._password_file = password_file
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()
        self._schema_ready = False
        self._fail_fast_until = 0.0
        self._last_logged = -LOG_INTERVAL_SECONDS
        # The store id, with the listening generation it was read under: a database dropped and created
        # again ends the listening session, so a new generation reads the id again.
        self._store_id: tuple[str, int] | None = None
        # Called on each new pooled connection before its first use (src/tracing.py instruments it); set
        # before the pool opens, that is before the first request.
        self.configure_connection: Callable[[psycopg.Connection], None] | None = None
        self.user_cache = UserCache(url, self.timeout, password_file) if user_cache else None
        try:
            create_schema(url, self.timeout, password_file)
            self._schema_ready = True
        except StoreUnavailable as exc:
            log.warning("schema not created yet, will retry on first use: %s", exc)

    def __repr__(self) -> str:
        parts = urlsplit(self._url)
        return f"PostgresStore(host={parts.hostname!r}, database={parts.path.lstrip('/')!r})"

    # ------------------------------------------------------------------ connections

    def _get_pool(self) -> ConnectionPool:
        """This process's pool, opened on first use; a pool inherited through fork is left untouched."""
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pool_pid == pid:
            return pool
        with self._pool_lock:
            if self._pool is None or self._pool_pid != pid:
                if self._pool is not None:
                    # Opened by the parent before fork: its threads are gone here and closing it would end the
                    # parent's sessions, so keep a reference and never touch it.
                    _INHERITED_POOLS.append(self._pool)
                pool = ConnectionPool(
                    self._url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.timeout,
                    reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
                    # A callable: the pool asks for the arguments (and so reads the password file) on every
                    # new connection.
                    kwargs=self._connect_kwargs,
                    configure=self.configure_connection,
                    name=f"flask-api-{pid}",
                    open=False,
                )
                pool.open(wait=False)
                self._pool, self._pool_pid = pool, pid
                _OPENED_HERE.add(self)
            return self._pool

    def _connect_kwargs(self) -> dict[str, object]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.timeout)),
            **password_kwargs(self._password_file),
        }

    def _unavailable(self, exc: BaseException, waited: float = 0.0) -> StoreUnavailable:
        if isinstance(exc, PoolTimeout):
            reason = f"database unavailable: no connection within {waited:g} s"
        else:
            reason = f"database unavailable: {describe_error(exc, self._url)}"
        # One line per process every few seconds is enough to see an outage without flooding the log.
        now = time.monotonic()
        if now - self._last_logged >= LOG_INTERVAL_SECONDS:
            self._last_logged = now
            log.warning("%s", reason)
        return StoreUnavailable(reason)

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        """Migrate when the schema is behind (the database was down at construction); one query when not."""
        if not schema_current(conn):
            create_schema(self._url, self.timeout, self._password_file)
        self._schema_ready = True

    def _run(
        self,
        work: Callable[[psycopg.Connection], T],
        *,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> T:
        """Run ``work`` on a pooled connection, mapping every database failure to StoreUnavailable.

        On a worker's event loop it raises WouldWait instead (src/lifecycle.py): the request is run again on
        the worker's thread pool, and the loop never waits on the database.
        """
        must_not_wait()
        pool = self._get_pool()
        if timeout is None:
            timeout = self.timeout
        if self._fail_fast_until and time.monotonic() < self._fail_fast_until:
            timeout = min(timeout, FAIL_FAST_TIMEOUT_SECONDS)
        for attempt in (1, 2):
            sent = False
            try:
                with pool.connection(timeout=timeout) as conn:
                    if not idempotent:
                        # A write must not be sent twice, so make sure first that the connection is alive.
                        pool.check_connection(conn)
                    if not self._schema_ready:
                        self._ensure_schema(conn)
                    sent = True
                    result = work(conn)
            except errors.UniqueViolation as exc:
                raise UsernameTaken(exc.diag.message_detail or "username taken") from None
            except PoolTimeout as exc:
                if pool.pop_stats().get("connections_errors"):
                    # The pool cannot reach the database (not merely busy): fail fast for a while.
                    self._fail_fast_until = time.monotonic() + self.timeout
                raise self._unavailable(exc, timeout) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Typically the database restarted: drop every broken idle connection, then retry once
                # unless a write may already have reached the server.
                pool.check()
                if attempt == 2 or (sent and not idempotent):
                    raise self._unavailable(exc) from None
            except psycopg.Error as exc:
                raise self._unavailable(exc) from None
            else:
                self._fail_fast_until = 0.0
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _confirmed(
        self, work: Callable[[psycopg.Connection], T], needed: Callable[[T], bool] = bool
    ) -> Callable[[psycopg.Connection], T]:
        """``work`` (a change the triggers announce) in one transaction that, when ``needed(result)``, also
        sends a fresh token on SYNC_CHANNEL; it then returns only once every session that was listening has
        sent the token back (its process has applied the change: see UserCache) or has been ended. So from
        the answer of the request that made a change on, no process serves the old state from its cache."""

        def run(conn: psycopg.Connection) -> T:
            token = secrets.token_hex(16)
            conn.execute(f"LISTEN {CONFIRM_CHANNEL}")
            try:
                with conn.transaction():
                    result = work(conn)
                    sync = needed(result)
                    if sync:
                        conn.execute("SELECT pg_notify(%s, %s)", (SYNC_CHANNEL, token))
                if sync:
                    self._await_confirmations(conn, token)
            finally:
                try:
                    conn.execute(f"UNLISTEN {CONFIRM_CHANNEL}")
                except psycopg.Error:
                    conn.close()  # never back to the pool still listening
            return result

        return run

    def _await_confirmations(self, conn: psycopg.Connection, token: str) -> None:
        """Wait until each session listening on this database has sent ``token`` back, for at most
        CONFIRM_TIMEOUT_SECONDS; end the sessions that have not (their processes then stop trusting their
        caches: UserCache._drain). One that started listening after the commit needs no token (its cache
        starts empty), but cannot be told from one that has not answered yet, and is ended as well."""
        waiting = {
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s",
                (LISTENER_APPLICATION_NAME,),
            ).fetchall()
        }
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while waiting and (left := deadline - time.monotonic()) > 0:
            for notice in conn.notifies(timeout=left, stop_after=1):
                if notice.channel == CONFIRM_CHANNEL and notice.payload == token:
                    waiting.discard(notice.pid)
        if not waiting:
            return
        log.warning(
            "user cache: %d listening session(s) did not confirm a change within %.1f s; ending them",
            len(waiting),
            CONFIRM_TIMEOUT_SECONDS,
        )
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM unnest(%s::integer[]) AS pid",
                (round(CONFIRM_TIMEOUT_SECONDS * 1000), sorted(waiting)),
            )
        except psycopg.Error:
            log.exception("user cache: could not end the listening sessions %s", sorted(waiting))

    # ------------------------------------------------------------------ users

    def create_user(self, username: str, password_hash: str) -> User:
        """Insert a user; the identity column hands out the id."""

        def insert(conn: psycopg.Connection) -> User:
            row = conn.execute(
                "INSERT INTO users (username, password_hash) VALUES (%s, %s) RETURNING id",
                (username, password_hash),
            ).fetchone()
            if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
                raise StoreUnavailable("database returned no id for the new user")
            return User(row[0], username, password_hash)

        return self._run(insert, idempotent=False)

    def find_by_username(self, username: str) -> User | None:
        """The user with exactly this name, or None."""
        if "\x00" in username:  # PostgreSQL text cannot hold NUL, so no such user can exist
            return None
        return self._run(
            lambda conn: _user(
                conn.execute(
                    "SELECT id, username, password_hash FROM users WHERE username = %s", (username,)
                ).fetchone()
            )
        )

    def find_by_id(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        if not 0 < user_id <= BIGINT_MAX:
            return None
        generation = None
        if self.user_cache is not None:
            cached, generation = self.user_cache.lookup(user_id)
            if cached is not None:
                return cached
        user = self._run(
            lambda conn: _user(
                conn.execute(
                    "SELECT id, username, password_hash FROM users WHERE id = %s", (user_id,)
                ).fetchone()
            )
        )
        if user is not None and self.user_cache is not None:
            self.user_cache.remember(user, generation)
        return user

    def create_users_bulk(self, rows: Iterable[tuple[str, str]]) -> int:
        """Insert many users with one COPY in one transaction, all or none."""
        rows = list(rows)
        if not rows:
            return 0

        def copy(conn: psycopg.Connection) -> int:
            with (
                conn.transaction(),
                conn.cursor() as cursor,
                cursor.copy("COPY users (username, password_hash) FROM STDIN") as stream,
            ):
                for row in rows:
                    stream.write_row(row)
            return len(rows)

        return self._run(copy, idempotent=False)

    def delete_user(self, user_id: int) -> bool:
        """Remove a user and its sessions; the identity sequence never hands its id out again."""
        if not 0 < user_id <= BIGINT_MAX:
            return False
        if self.user_cache is not None:
            self.user_cache.forget(user_id)

        def delete(conn: psycopg.Connection) -> bool:
            # Two statements: the second one's snapshot sees a session started by a login that held the
            # user's row (FOR SHARE) until the first one could delete it.
            with conn.transaction():
                deleted = conn.execute("DELETE FROM users WHERE id = %s", (user_id,)).rowcount > 0
                conn.execute("DELETE FROM sessions WHERE user_id = %s", (user_id,))
            return deleted

        deleted = self._run(self._confirmed(delete), idempotent=False)
        if self.user_cache is not None:
            self.user_cache.forget(user_id)
            self.user_cache.forget_sessions(every=True)
        return deleted

    def change_password(self, user_id: int, old_hash: str, new_hash: str, *, end_sessions: bool) -> bool:
        """Replace the hash if it is still ``old_hash``; end the user's sessions in the same transaction."""
        if not 0 < user_id <= BIGINT_MAX:
            return False

        def change(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                changed = (
                    conn.execute(
                        "UPDATE users SET password_hash = %s WHERE id = %s AND password_hash = %s",
                        (new_hash, user_id, old_hash),
                    ).rowcount
                    > 0
                )
                if changed and end_sessions:
                    # A statement of its own, as in delete_user: it sees every login that committed first.
                    conn.execute("DELETE FROM sessions WHERE user_id = %s", (user_id,))
            return changed

        changed = self._run(self._confirmed(change), idempotent=False)
        if changed and self.user_cache is not None:
            self.user_cache.forget(user_id)
            if end_sessions:
                self.user_cache.forget_sessions(every=True)
        return changed

    # ------------------------------------------------------------------ operator commands

    def list_users(self) -> list[tuple[User, bool]]:
        """Every user with whether it is disabled, in id order."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT id, username, password_hash, disabled FROM users ORDER BY id"
            ).fetchall()
        )
        return [(User(user_id, name, digest), disabled) for user_id, name, digest, disabled in rows]

    def set_disabled(self, user_id: int, disabled: bool) -> bool:
        """Set the flag and, when disabling, delete the user's sessions in the same transaction."""
        if not 0 < user_id <= BIGINT_MAX:
            return False

        def change(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                # The row lock waits for a login holding the row (FOR SHARE); the DELETE, a statement of its
                # own, then sees the session that login started.
                found = (
                    conn.execute("UPDATE users SET disabled = %s WHERE id = %s", (disabled, user_id)).rowcount
                    > 0
                )
                if found and disabled:
                    conn.execute("DELETE FROM sessions WHERE user_id = %s", (user_id,))
            return found

        found = self._run(self._confirmed(change), idempotent=False)
        if self.user_cache is not None:
            self.user_cache.forget(user_id)
            self.user_cache.forget_sessions(every=True)
        return found

    def end_sessions_of(self, user_id: int) -> int:
        """Delete every session of the user (their token hashes follow)."""
        if not 0 < user_id <= BIGINT_MAX:
            return 0
        ended = self._run(
            self._confirmed(
                lambda conn: conn.execute("DELETE FROM sessions WHERE user_id = %s", (user_id,)).rowcount
            ),
            idempotent=False,
        )
        if self.user_cache is not None:
            self.user_cache.forget_sessions(every=True)
        return ended

    # ------------------------------------------------------------------ sessions

    def create_session(self, user: User, session: Session, prune_before: float) -> bool:
        """Insert the session and the key of its current refresh token, only while the user's row still has
        the hash that was verified (held FOR SHARE, so a concurrent password change or deletion waits or
        wins); prune."""

        def create(conn: psycopg.Connection) -> bool:
            with conn.transaction():
                # Expired sessions go a few at a time; SKIP LOCKED keeps concurrent logins from waiting on
                # (or deadlocking over) the same rows.
                conn.execute(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < %s "
                    "LIMIT 100 FOR UPDATE SKIP LOCKED)",
                    (prune_before,),
                )
                row = conn.execute(
                    # After waiting for the row, PostgreSQL checks the condition again on its new version:
                    # a user disabled meanwhile starts nothing.
                    "WITH owner AS (SELECT id FROM users "
                    "WHERE id = %s AND password_hash = %s AND NOT disabled FOR SHARE) "
                    "INSERT INTO sessions (id, user_id, created_at, expires_at) "
                    "SELECT %s, id, %s, %s FROM owner RETURNING id",
                    (user.id, user.password_hash, session.id, session.created_at, session.expires_at),
                ).fetchone()
                if row is None:
                    return False
                conn.execute(
                    "INSERT INTO refresh_tokens (hash, session_id) VALUES (%s, %s)",
                    (_refresh_key(session.id, session.generation), session.id),
                )
            return True

        return self._run(create, idempotent=False)

    def rotate_refresh_token(
        self, session_id: str, generation: int, now: float, absolute: float, idle: float
    ) -> Session:
        """Spend the token of ``generation``: renew the session's expiry and move its one refresh_tokens row
        to the next generation, in one transaction that holds the session's row (FOR UPDATE) first, so
        concurrent calls queue there (exactly one finds the generation current) and never deadlock.

        A session keeps one row of refresh_tokens, its current generation (``<session id>.<generation>``):
        an earlier generation is a spent token, recognised without a row of its own.
        """

        def rotate(conn: psycopg.Connection) -> Session | RefreshRefused:
            with conn.transaction():
                row = conn.execute(
                    "SELECT id, user_id, created_at, expires_at FROM sessions WHERE id = %s FOR UPDATE",
                    (session_id,),
                ).fetchone()
                if row is None:
                    return RefreshRefused("unknown")
                # A new statement, so a new snapshot: it sees what the holder of the lock before us did.
                current = conn.execute(
                    "SELECT hash FROM refresh_tokens WHERE session_id = %s AND position('.' in hash) > 0",
                    (session_id,),
                ).fetchone()
                current_generation = int(current[0].rpartition(".")[2]) if current is not None else 0
                if generation > current_generation:
                    return RefreshRefused("unknown")
                if generation < current_generation:
                    conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
                    return RefreshRefused("reused")
                session = Session(*row)
                if session.expires_at <= now:
                    return RefreshRefused("expired")
                renewed = Session(
                    session.id,
                    session.user_id,
                    session.created_at,
                    min(session.created_at + absolute, now + idle),
                    generation + 1,
                )
                conn.execute(
                    "UPDATE refresh_tokens SET hash = %s WHERE hash = %s",
                    (_refresh_key(session_id, renewed.generation), _refresh_key(session_id, generation)),
                )
                conn.execute(
                    "UPDATE sessions SET expires_at = %s WHERE id = %s", (renewed.expires_at, session.id)
                )
            return renewed

        outcome = self._run(
            self._confirmed(rotate, needed=lambda outcome: getattr(outcome, "reason", None) == "reused"),
            idempotent=False,
        )
        if isinstance(outcome, RefreshRefused):
            if outcome.reason == "reused" and self.user_cache is not None:
                self.user_cache.forget_sessions(every=True)
            raise outcome
        return outcome

    def find_session_user(self, user_id: int, session_id: str) -> tuple[User | None, bool, str | None]:
        """The user and whether the session is live for them, and the store's id: from this process's cache
        when both are there (one read of the notifications, no round trip), else one query whose answer is
        kept. Exact: a revocation made through the store returns only once every listening process has
        applied it (``_confirmed``)."""
        if not 0 < user_id <= BIGINT_MAX or "\x00" in session_id:
            return None, False, None
        generation = None
        if self.user_cache is not None:
            cached, generation = self.user_cache.lookup_session_user(user_id, session_id)
            if cached is not None:
                return cached, True, self._store_id_at(generation)
        row = self._run(
            lambda conn: conn.execute(
                "SELECT u.id, u.username, u.password_hash, s.id IS NOT NULL FROM users u "
                "LEFT JOIN sessions s ON s.id = %s AND s.user_id = u.id WHERE u.id = %s",
                (session_id, user_id),
            ).fetchone()
        )
        if row is None:
            return None, False, None
        user = User(row[0], row[1], row[2])
        if self.user_cache is not None:
            self.user_cache.remember(user, generation)
            if row[3]:
                self.user_cache.remember_session(session_id, user.id, generation)
        return user, bool(row[3]), self.store_id()

    def session_user(self, session_id: str) -> int | None:
        """The user id of a live session: from this process's cache, else one query."""
        if "\x00" in session_id:
            return None
        generation = None
        if self.user_cache is not None:
            user_id, generation = self.user_cache.lookup_session(session_id)
            if user_id is not None:
                return user_id
        row = self._run(
            lambda conn: conn.execute("SELECT user_id FROM sessions WHERE id = %s", (session_id,)).fetchone()
        )
        if row is None:
            return None
        if self.user_cache is not None:
            self.user_cache.remember_session(session_id, row[0], generation)
        return row[0]

    def end_session(self, session_id: str) -> bool:
        """Delete the session (its token hashes follow); every process drops it on the notification."""
        if "\x00" in session_id:
            return False
        ended = self._run(
            self._confirmed(
                lambda conn: conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,)).rowcount > 0
            ),
            idempotent=False,
        )
        if self.user_cache is not None:
            self.user_cache.forget_sessions((session_id,))
        return ended

    def check_ready(self) -> None:
        """Raise StoreUnavailable unless the database answers (within a short probe timeout)."""
        self._run(
            lambda conn: conn.execute("SELECT 1").fetchone(),
            timeout=min(self.timeout, READY_TIMEOUT_SECONDS),
        )

    # ------------------------------------------------------------------ login failures

    def store_id(self) -> str | None:
        """The id in ``store_identity``, read once per listening generation (each call when not listening)."""
        return self._store_id_at(self.user_cache.generation() if self.user_cache is not None else None)

    def _store_id_at(self, generation: int | None) -> str | None:
        """``store_id`` under ``generation``, the listening generation a lookup has just read (None: not
        listening), so that a token check answered from the cache reads the notifications once."""
        cached = self._store_id
        if generation is not None and cached is not None and cached[1] == generation:
            return cached[0]
        row = self._run(lambda conn: conn.execute("SELECT store_id FROM store_identity").fetchone())
        if row is None:
            raise StoreUnavailable("database has no store_identity row: run python -m src.migrate")
        if generation is not None:
            self._store_id = (row[0], generation)
        elif self.user_cache is not None:
            # Not listening: a process that only issues tokens never looks a user or a session up (where
            # listening starts otherwise), and would read the id at every sign-in.
            self.user_cache.listen_after_query()
        return row[0]

    def reserve_attempt(
        self, keys: Sequence[str], now: float, window: float, allow: Callable[[Counts], bool]
    ) -> tuple[bool, Counts]:
        """One transaction holding an advisory lock per key (taken in sorted order: no deadlock)."""
        cutoff = now - window

        def reserve(conn: psycopg.Connection) -> tuple[bool, Counts]:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                    "FROM unnest(%s::text[]) AS k ORDER BY k",
                    (sorted(set(keys)),),
                )
                rows = conn.execute(
                    "SELECT key, count(*), min(at) FROM login_failures "
                    "WHERE key = ANY(%s) AND at > %s GROUP BY key",
                    (list(keys), cutoff),
                ).fetchall()
                found = {key: (int(count), oldest) for key, count, oldest in rows}
                counts: Counts = [found.get(key, (0, None)) for key in keys]
                if not allow(counts):
                    return False, counts
                conn.execute(
                    "WITH pruned AS (DELETE FROM login_failures WHERE at <= %s) "
                    "INSERT INTO login_failures (key, at) SELECT k, %s FROM unnest(%s::text[]) AS k",
                    (cutoff, now, list(keys)),
                )
                return True, counts

        return self._run(reserve, idempotent=False)

    def release_attempt(self, keys: Sequence[str], at: float) -> None:
        """Delete one row stamped ``at`` of each key."""
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM login_failures WHERE ctid IN (SELECT DISTINCT ON (key) ctid FROM login_failures "
                "WHERE key = ANY(%s) AND at = %s)",
                (list(keys), at),
            ),
            idempotent=False,
        )

    def login_failures(self, key: str, now: float, window: float) -> tuple[int, float | None]:
        """Failures of ``key`` within the window and the oldest of their timestamps."""
        row = self._run(
            lambda conn: conn.execute(
                "SELECT count(*), min(at) FROM login_failures WHERE key = %s AND at > %s", (key, now - window)
            ).fetchone()
        )
        if row is None:  # pragma: no cover - an aggregate always returns one row
            return 0, None
        return int(row[0]), row[1]

    def clear_login_failures(self, key: str) -> None:
        """Forget the failures of ``key``."""
        self._run(lambda conn: conn.execute("DELETE FROM login_failures WHERE key = %s", (key,)))

    def forget_login_failures(self, keys: Sequence[str], suffix: str) -> None:
        """Forget the failures counted under ``keys`` and under every key ending with ``suffix``."""
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM login_failures WHERE key = ANY(%s) OR right(key, %s) = %s",
                (list(keys), len(suffix), suffix),
            )
        )

    def close(self) -> None:
        """Close this process's pool and listening connection (a parent's are left alone)."""
        if self.user_cache is not None:
            self.user_cache.close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
            if pool is not None and self._pool_pid == os.getpid():
                pool.close()


_INHERITED_POOLS: list[ConnectionPool] = []
# Stores that opened a pool (closed at interpreter exit by _close_pools_at_exit; weak: a store dropped earlier
# goes with its pool as before).
_OPENED_HERE: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


@atexit.register
def _close_pools_at_exit() -> None:
    """Close the pools this process opened, while their worker threads can still stop.

    Left to garbage collection after the interpreter has begun to finalise, a pool waits 5 s for each
    worker thread it cannot join (Python 3.13, the image's Python): ``flask --app src users disable`` took
    24 s instead of 4. A pool inherited through fork is left alone, as ``close`` does.
    """
    pid = os.getpid()
    for store in list(_OPENED_HERE):
        if store._pool_pid == pid:
            store.close()

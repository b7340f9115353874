"""Functions run in child processes (spawn context) by the storage tests; importable by the children."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.synchronize
import os
import threading
import time
from collections.abc import Callable

import psycopg

from src.storage import JsonFileStore, PostgresStore, UsernameTaken, UserStore
from src.storage.postgres import CONFIRM_CHANNEL, LISTENER_APPLICATION_NAME, SYNC_CHANNEL, create_schema

SPAWN = multiprocessing.get_context("spawn")
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def report(
    results: multiprocessing.queues.Queue, index: int, work: Callable[..., object], *args: object
) -> None:
    """Run ``work(*args)`` in this child and put ``(index, result)`` on ``results``, or ``(index, error)``."""
    try:
        results.put((index, work(*args)))
    except BaseException as error:  # noqa: BLE001 - handed to the test, which fails with it
        results.put((index, RuntimeError(f"child {index}: {error!r}")))


def race(work: Callable[..., object], argument_lists: list[tuple]) -> list:
    """Run ``work(*arguments, barrier)`` in one spawned process per argument list, all released together.

    Every process opens its store and then waits at the barrier: they start their writes at the same
    moment, so that a missing lock loses writes on every run, not only when the scheduler happens to
    interleave them. Returns the results in the order of ``argument_lists``.
    """
    barrier = SPAWN.Barrier(len(argument_lists))
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=report, args=(results, index, work, *arguments, barrier))
        for index, arguments in enumerate(argument_lists)
    ]
    for process in processes:
        process.start()
    reported = {}
    for _ in processes:
        index, result = results.get(timeout=180)
        reported[index] = result
        if isinstance(result, RuntimeError):
            barrier.abort()  # the others stop waiting for the failed one and report at once
    errors = [result for result in reported.values() if isinstance(result, RuntimeError)]
    assert not errors, errors
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return [reported[index] for index in range(len(argument_lists))]


def open_store(target: str) -> UserStore:
    """A store for ``target``: a PostgreSQL URL or a data file path."""
    if target.startswith("postgresql://"):
        return PostgresStore(target, min_size=1, max_size=2, timeout=10)
    return JsonFileStore(target)


def register_many(
    target: str, prefix: str, count: int, start: multiprocessing.synchronize.Event
) -> list[tuple[str, int]]:
    """Wait for ``start``, then register ``count`` users named ``<prefix>-<n>``; return (name, id) pairs."""
    store = open_store(target)
    start.wait(30)
    created = [
        (user.username, user.id) for user in (store.create_user(f"{prefix}-{n}", HASH) for n in range(count))
    ]
    store.close()
    return created


def register_once(target: str, username: str, start: multiprocessing.synchronize.Event) -> int | None:
    """Try to register ``username``; the id on success, None when it was taken."""
    store = open_store(target)
    start.wait(30)
    try:
        return store.create_user(username, HASH).id
    except UsernameTaken:
        return None
    finally:
        store.close()


def register_each_once(
    target: str, usernames: list[str], start: multiprocessing.synchronize.Barrier
) -> list[int | None]:
    """For each name in turn: wait at ``start`` with the other processes, then try to register it."""
    store = open_store(target)
    ids = []
    for username in usernames:
        start.wait(60)
        try:
            ids.append(store.create_user(username, HASH).id)
        except UsernameTaken:
            ids.append(None)
    store.close()
    return ids


def register_and_acknowledge(target: str, prefix: str, acks: multiprocessing.connection.Connection) -> None:
    """Register users forever, sending each name through ``acks`` only once create_user has returned."""
    store = open_store(target)
    n = 0
    while True:
        user = store.create_user(f"{prefix}-{n}", HASH)
        acks.send((user.username, user.id))
        n += 1


def look_up_repeatedly(
    target: str, username: str, rounds: int, start: multiprocessing.synchronize.Event
) -> int:
    """Look ``username`` up ``rounds`` times; return how many lookups found it (errors propagate)."""
    store = open_store(target)
    start.wait(30)
    found = sum(store.find_by_username(username) is not None for _ in range(rounds))
    store.close()
    return found


def create_schema_at_once(url: str, start: multiprocessing.synchronize.Event) -> bool:
    """Create the schema as soon as ``start`` is set, and construct a store too; True on success."""
    start.wait(30)
    create_schema(url, 10)
    PostgresStore(url, timeout=10).close()
    return True


def record_failures(
    target: str, key: str, count: int, now: float, start: multiprocessing.synchronize.Event
) -> None:
    """Record ``count`` login failures of ``key``."""
    store = open_store(target)
    start.wait(30)
    for n in range(count):
        store.record_login_failure(key, now + n * 0.001, 300)
    store.close()


def rename_unannounced(url: str, user_id: int, username: str) -> None:
    """Change a name with the triggers off: only a lookup that reaches the database can see it."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE users SET username = %s WHERE id = %s", (username, user_id))


RESERVED_KEY = "pair:10.0.0.1|alice"
RESERVATION_LIMIT = 20


def reserve_under_limit(target: str, start: multiprocessing.synchronize.Event, done: Callable) -> None:
    """After ``start``, try 5 reservations of RESERVED_KEY under RESERVATION_LIMIT; ``done(how many)``."""
    with open_store(target) as store:
        start.wait(30)
        recorded = 0
        for _ in range(5):
            ok, _ = store.reserve_attempt(
                [RESERVED_KEY], time.time(), 300.0, lambda counts: counts[0][0] < RESERVATION_LIMIT
            )
            recorded += ok
    done(recorded)


# ------------------------------------------------------------------------ held inside a critical section


def waiting_for_the_lock(target: str, lock_path: str) -> int:
    """Processes blocked on the lock a store serialises with: flock on ``lock_path`` for a JSON store (blocked
    waiters are the "->" lines of /proc/locks), advisory locks not yet granted for PostgreSQL."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]
    try:
        inode = os.stat(lock_path).st_ino
    except FileNotFoundError:
        return 0
    with open("/proc/locks", encoding="ascii") as locks:
        return sum(
            1 for line in locks if " -> FLOCK " in line and line.split()[6].rsplit(":", 1)[1] == str(inode)
        )


class CriticalSection:
    """A hook called inside a store's critical section by two processes, that makes their race happen.

    The first process to call it stays inside until the other has either entered too (the lock is missing) or
    is blocked on the lock, whatever the machine's load: a missing lock is caught on every run, and a working
    one costs no fixed wait. Made in the test, handed to both children (spawn pickles its shared values).
    """

    def __init__(self) -> None:
        self.inside = SPAWN.Value("i", 0)
        self.finished = SPAWN.Value("i", 0)

    def hold(self, target: str, lock_path: str, timeout: float = 60.0) -> None:
        """Called inside the critical section: return once the other process has arrived (see above)."""
        with self.inside.get_lock():
            self.inside.value += 1
        try:
            deadline = time.monotonic() + timeout
            while self.inside.value + self.finished.value + waiting_for_the_lock(target, lock_path) < 2:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the other process neither entered nor waited in {timeout} s")
                time.sleep(0.001)
        finally:
            with self.inside.get_lock():
                self.inside.value -= 1

    def leave(self) -> None:
        """Called by each process once its whole operation has returned."""
        with self.finished.get_lock():
            self.finished.value += 1


def reserve_once_held(
    target: str, section: CriticalSection, start: multiprocessing.synchronize.Barrier
) -> bool:
    """One reservation of RESERVED_KEY under a limit of 1, held inside the store's critical section."""
    with open_store(target) as store:
        lock_path = getattr(store, "failures_lock_path", "")
        start.wait(60)

        def allow(counts: list) -> bool:
            section.hold(target, lock_path)  # the counts are read: hold before deciding and recording
            return counts[0][0] < 1

        try:
            recorded, _ = store.reserve_attempt([RESERVED_KEY], time.time(), 300.0, allow)
        finally:
            section.leave()
    return recorded


def register_once_held(
    target: str, username: str, section: CriticalSection, start: multiprocessing.synchronize.Barrier
) -> int | None:
    """Register ``username``, held inside the store's critical section after the duplicate check."""
    store = JsonFileStore(target)
    start.wait(60)
    write_users = store._write_users

    def held_write(*args: object, **kwargs: object) -> object:
        section.hold(target, store.lock_path)  # the name was checked free: hold before writing it
        return write_users(*args, **kwargs)

    store._write_users = held_write  # type: ignore[method-assign]
    try:
        return store.create_user(username, HASH).id
    except UsernameTaken:
        return None
    finally:
        section.leave()
        store.close()


class Listener:
    """A session listening as a process's cache does, on a thread: it sends each revocation's token back
    ``delay`` seconds after it arrives, or never (``delay=None``)."""

    def __init__(self, url: str, delay: float | None, password: str | None = None) -> None:
        self.conn = psycopg.connect(
            url, autocommit=True, application_name=LISTENER_APPLICATION_NAME, password=password
        )
        self.conn.execute(f"LISTEN {SYNC_CHANNEL}")
        self.delay = delay
        self.confirmed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error):
            tokens = [notice.payload for notice in self.conn.notifies(timeout=30, stop_after=1)]
            if self.delay is None or not tokens:
                return
            time.sleep(self.delay)  # the slow process this listener stands for
            self.confirmed.set()
            self.conn.execute("SELECT pg_notify(%s, %s)", (CONFIRM_CHANNEL, tokens[0]))

    def alive(self) -> bool:
        self.thread.join(timeout=30)
        try:
            self.conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def close(self) -> None:
        self.conn.close()

"""Functions run in child processes (spawn context) by the storage tests; importable by the children."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.synchronize
import time
from collections.abc import Callable

import psycopg

from src.storage import JsonFileStore, PostgresStore, UsernameTaken, UserStore
from src.storage.postgres import create_schema

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


def reserve_under_limit(target: str, key: str, limit: int) -> bool:
    """Reserve one attempt of ``key`` unless it has ``limit`` already; whether this process recorded one."""
    with open_store(target) as store:
        recorded, _counts = store.reserve_attempt(
            [key], time.time(), 300.0, lambda counts: counts[0][0] < limit
        )
    return recorded

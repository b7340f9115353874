"""PostgresStore against a real throwaway PostgreSQL: records, ids, schema creation, outages, fork safety."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from harness import free_port, wait_until
from harness.postgres import new_server, require_postgres_binaries
from src.lifecycle import WouldWait, on_event_loop
from src.storage import (
    JsonFileStore,
    PostgresStore,
    StoreUnavailable,
    User,
    UsernameTaken,
    store_from_settings,
)
from src.storage import postgres as postgres_module
from src.storage.base import RefreshRefused, Session
from src.storage.postgres import (
    LISTENER_APPLICATION_NAME,
    create_schema,
    describe_error,
)

from . import previous_release, workers

HASH = workers.HASH
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_python(script: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Write ``source`` (dedented) to ``script`` and run it with ``args`` in a fresh interpreter, from the
    repository root."""
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# The application's tables and yoyo's bookkeeping of the versions applied (src/storage/schema.py).
SCHEMA_TABLES = {
    "users",
    "login_failures",
    "store_identity",
    "sessions",
    "refresh_tokens",
    "_yoyo_migration",
    "_yoyo_log",
    "_yoyo_version",
    "yoyo_lock",
}


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_construction_creates_the_schema(postgres_url):
    PostgresStore(postgres_url).close()

    assert tables(postgres_url) == SCHEMA_TABLES


def test_create_user_returns_user_found_by_name_and_by_id(pg_store):
    user = pg_store.create_user("alice", HASH)

    assert user == User(1, "alice", HASH)
    assert pg_store.find_by_username("alice") == user
    assert pg_store.find_by_id(1) == user


def test_find_by_username_is_exact_and_case_sensitive(pg_store):
    pg_store.create_user("alice", HASH)

    assert pg_store.find_by_username("Alice") is None
    assert pg_store.find_by_username("alice ") is None


def test_unknown_or_out_of_range_ids_find_nobody(pg_store):
    assert pg_store.find_by_id(1) is None
    assert pg_store.find_by_id(0) is None
    assert pg_store.find_by_id(-5) is None
    assert pg_store.find_by_id(2**70) is None


def test_a_name_with_a_nul_character_finds_nobody(pg_store):
    assert pg_store.find_by_username("alice\x00") is None


def test_a_role_without_ddl_rights_works_on_a_migrated_schema(postgres_url):
    create_schema(postgres_url)
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        admin.execute(f"GRANT SELECT, INSERT, DELETE ON users, login_failures TO {role}")
        admin.execute(f"GRANT USAGE ON SEQUENCE users_id_seq TO {role}")
        admin.execute(f"GRANT SELECT ON _yoyo_migration TO {role}")  # the store checks the version
    app_url = postgres_url.replace("postgres@", f"{role}@", 1)
    try:
        with PostgresStore(app_url) as store:
            assert store.create_user("alice", HASH).id == 1
            store.check_ready()
        with psycopg.connect(app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE IF NOT EXISTS users (id int)")
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_duplicate_username_raises_username_taken(pg_store):
    pg_store.create_user("alice", HASH)

    with pytest.raises(UsernameTaken, match="alice"):
        pg_store.create_user("alice", "other-hash")
    assert pg_store.find_by_username("alice").password_hash == HASH


def test_ids_are_stable_across_a_new_store(pg_store, postgres_url):
    created = [pg_store.create_user(name, HASH) for name in ("alice", "bob", "carol")]

    with PostgresStore(postgres_url) as other:
        assert [other.find_by_username(u.username) for u in created] == created
        assert other.create_user("dave", HASH).id == 4


def test_ids_are_never_reused_after_a_user_is_removed(pg_store):
    pg_store.create_user("alice", HASH)
    bob = pg_store.create_user("bob", HASH)

    assert pg_store.delete_user(bob.id) is True
    assert pg_store.delete_user(bob.id) is False
    assert pg_store.delete_user(0) is False
    assert pg_store.find_by_id(bob.id) is None
    assert pg_store.create_user("bob", HASH).id == 3


def test_bulk_create_copies_every_row(pg_store):
    count = pg_store.create_users_bulk((f"user{n}", HASH) for n in range(2000))

    assert count == 2000
    assert pg_store.find_by_username("user1999") == User(2000, "user1999", HASH)
    assert pg_store.create_users_bulk([]) == 0


def test_bulk_create_with_a_taken_name_writes_nothing(pg_store):
    pg_store.create_user("alice", HASH)

    with pytest.raises(UsernameTaken, match="alice"):
        pg_store.create_users_bulk([("bob", HASH), ("alice", HASH)])

    assert pg_store.find_by_username("bob") is None


def test_check_ready_passes_when_the_database_answers(pg_store):
    assert pg_store.check_ready() is None  # StoreUnavailable otherwise


def test_several_processes_creating_the_schema_at_once_all_succeed(postgres_url):
    assert workers.race(workers.create_schema_at_once, [(postgres_url,)] * 6) == [True] * 6

    assert tables(postgres_url) == SCHEMA_TABLES


def test_several_processes_registering_at_once_get_unique_ids(postgres_url, pg_store):
    created = [
        pair
        for pairs in workers.race(workers.register_many, [(postgres_url, f"p{n}", 25) for n in range(4)])
        for pair in pairs
    ]

    assert sorted(uid for _, uid in created) == list(range(1, 101))
    assert [pg_store.find_by_username(name).id for name, _ in created] == [uid for _, uid in created]


def test_one_name_registered_by_several_processes_at_once_succeeds_exactly_once(postgres_url, pg_store):
    results = workers.race(workers.register_once, [(postgres_url, "contested")] * 6)

    (winner,) = [r for r in results if r is not None]  # exactly one
    assert results.count(None) == 5
    assert pg_store.find_by_username("contested").id == winner


def test_database_error_other_than_a_lost_connection_raises_store_unavailable(pg_store, postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE users")

    with pytest.raises(StoreUnavailable, match='relation "users" does not exist'):
        pg_store.find_by_username("alice")


def test_construction_succeeds_and_calls_fail_fast_when_the_database_is_down(caplog):
    url = f"postgresql://app:s3cret-pass@127.0.0.1:{free_port()}/app"

    with caplog.at_level(logging.WARNING):
        store = PostgresStore(url, timeout=1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database unavailable"):
            store.find_by_username("alice")
        with pytest.raises(StoreUnavailable, match="database unavailable") as raised:
            store.create_user("alice", HASH)
        with pytest.raises(StoreUnavailable, match="database unavailable"):
            store.check_ready()
        elapsed = time.monotonic() - started
        store.close()

    assert elapsed < 10
    assert "s3cret-pass" not in str(raised.value)
    assert "s3cret-pass" not in caplog.text
    assert "s3cret-pass" not in repr(store)


def test_error_messages_never_show_the_password_of_the_url():
    url = "postgresql://app:p%40ss-word@db.internal:5432/app"
    leak = psycopg.OperationalError('connection to "postgresql://app:p@ss-word@db" failed\nsecond line')

    assert describe_error(leak, url) == 'connection to "postgresql://app:***@db" failed'
    assert describe_error(psycopg.OperationalError(""), "postgresql://db/app") == "OperationalError"
    assert describe_error(ValueError("x"), "postgresql://[bad") == "x"


def test_create_schema_raises_store_unavailable_when_the_database_is_down():
    with pytest.raises(StoreUnavailable, match="database unavailable"):
        create_schema(f"postgresql://app@127.0.0.1:{free_port()}/app", timeout=1)


@pytest.fixture
def own_server():
    """A server of its own, so stopping it does not disturb the session's server."""
    require_postgres_binaries()
    server = new_server()
    yield server
    server.destroy()


def test_outage_raises_store_unavailable_and_the_same_store_recovers(own_server):
    url = own_server.create_database("app")
    store = PostgresStore(url, min_size=2, max_size=4, timeout=2)
    store.create_user("alice", HASH)
    assert store.find_by_username("alice").id == 1

    own_server.stop()
    with pytest.raises(StoreUnavailable, match="database unavailable"):
        store.find_by_username("alice")
    for call in (
        lambda: store.find_by_id(1),
        lambda: store.create_user("bob", HASH),
        store.check_ready,
        lambda: store.login_failures("k", time.time(), 60),
        lambda: store.record_login_failure("k", time.time(), 60),
        lambda: store.clear_login_failures("k"),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database unavailable"):
            call()
        assert time.monotonic() - started < 2, "calls after the first failure fail fast"

    own_server.start()
    assert store.find_by_username("alice").id == 1
    assert store.create_user("bob", HASH).id == 2
    store.check_ready()
    store.close()


def test_writes_after_a_restart_use_a_fresh_connection(own_server):
    url = own_server.create_database("app")
    store = PostgresStore(url, min_size=1, max_size=1, timeout=5)
    store.create_user("alice", HASH)

    own_server.restart()

    assert store.create_user("bob", HASH).id == 2
    store.close()


def test_schema_is_created_on_first_use_when_the_database_was_down_at_construction(own_server):
    url = own_server.create_database("app")
    own_server.stop()
    store = PostgresStore(url, timeout=2)
    own_server.start()

    assert store.create_user("alice", HASH).id == 1
    assert tables(url) == SCHEMA_TABLES
    store.close()


def test_a_forked_worker_opens_its_own_pool_and_listener_and_the_parent_keeps_working(postgres_url, tmp_path):
    result = run_python(
        tmp_path / "fork_check.py",
        """
            import os, sys
            from src.storage import PostgresStore
            from tests.storage import workers
            URL = sys.argv[1]
            store = PostgresStore(URL)
            parent = store.create_user("parent", "h")  # the parent opens its pool before fork
            for _ in range(3):                          # ... and listens for its user cache
                store.find_by_id(parent.id)
            parent_pool, parent_listener = store._pool, store.user_cache._conn
            pid = os.fork()
            if pid == 0:
                user = store.create_user("child", "h")
                ok = store._pool is not parent_pool and store.find_by_id(user.id) == user
                for _ in range(3):
                    store.find_by_id(user.id)
                ok = ok and store.user_cache.listening and store.user_cache._conn is not parent_listener
                store.close()
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "child failed"
            assert store._pool is parent_pool
            assert store.find_by_username("child") is not None
            store.create_user("parent-again", "h")
            # The parent's listening session outlived the child: its cache still serves.
            workers.rename_unannounced(URL, parent.id, "renamed")
            assert store.find_by_id(parent.id).username == "parent"
            assert store.user_cache._conn is parent_listener
            store.close()
            print("ok")
            """,
        postgres_url,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_process_that_used_a_store_closes_its_pool_before_the_interpreter_finalises(postgres_url, tmp_path):
    """A command (``flask --app src users disable``) exits at once: its pool is closed by an exit hook while
    the pool's threads can still stop, not left to garbage collection, which on Python 3.13 waited 5 s for
    each of them (24 s for the command instead of 4)."""
    result = run_python(
        tmp_path / "exit_check.py",
        """
            import atexit, sys, threading
            seen = {}
            def report():  # registered before the store's module: runs after that module's own exit hook
                threads = [t for t in threading.enumerate() if t.name.startswith("flask-api-")]
                print(f"pool closed: {seen['pool'].closed}; pool threads left: {len(threads)}")
            atexit.register(report)
            from src.storage import PostgresStore
            store = PostgresStore(sys.argv[1])
            store.create_user("alice", "h")
            seen["pool"] = store._pool
            """,
        postgres_url,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "pool closed: True; pool threads left: 0\n"


def test_store_from_settings_picks_postgres_when_a_database_url_is_set(postgres_url):
    settings = SimpleNamespace(
        database_url=postgres_url,
        data_file_path="unused.json",
        database_pool_min=1,
        database_pool_max=3,
        database_timeout_seconds=4,
        database_password_file=None,
    )

    store = store_from_settings(settings)

    assert isinstance(store, PostgresStore)
    assert (store.min_size, store.max_size, store.timeout) == (1, 3, 4.0)
    store.close()


def test_store_from_settings_picks_the_json_file_without_a_database_url(tmp_path):
    settings = SimpleNamespace(
        database_url=None,
        data_file_path=str(tmp_path / "data.json"),
        database_pool_min=1,
        database_pool_max=4,
        database_timeout_seconds=5,
    )

    store = store_from_settings(settings)

    assert isinstance(store, JsonFileStore)
    assert store.path == str(tmp_path / "data.json")


# ------------------------------------------------------------------------------------------------ user cache


def cached_lookups(store: PostgresStore, user_id: int) -> None:
    """Look a user up until this process listens for changes and keeps the user in its cache."""
    for _ in range(3):  # miss and start listening; miss and remember; hit
        assert store.find_by_id(user_id) is not None
    assert store.user_cache.listening


def run_sql(url: str, statement: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def seen_within(check) -> float:
    """Wait until ``check()`` holds; fails the test after 15 s.

    Without the notification a cached user is served until the TTL (USER_CACHE_TTL_SECONDS, 60 s) ends: seen
    within 15 s proves the notification, with room for a loaded machine.
    """
    return wait_until(check, timeout=15.0, interval=0.005, what="the change to be seen")


def test_token_lookups_are_served_from_the_cache_once_listening(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)

    workers.rename_unannounced(postgres_url, alice.id, "renamed")

    assert pg_store.find_by_id(alice.id).username == "alice"
    assert pg_store.find_by_username("renamed").id == alice.id  # other lookups always query


def test_a_user_changed_by_another_process_is_seen_at_once(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)

    run_sql(postgres_url, "UPDATE users SET username = 'alicia' WHERE id = %s", (alice.id,))

    seen_within(lambda: pg_store.find_by_id(alice.id).username == "alicia")


def test_a_user_deleted_by_another_process_is_gone_at_once(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)

    run_sql(postgres_url, "DELETE FROM users WHERE id = %s", (alice.id,))

    seen_within(lambda: pg_store.find_by_id(alice.id) is None)


def test_a_user_deleted_by_this_store_is_gone_immediately(pg_store):
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)

    assert pg_store.delete_user(alice.id)

    assert pg_store.find_by_id(alice.id) is None


def test_truncating_the_users_empties_the_cache(pg_store, postgres_url):
    alice, bob = pg_store.create_user("alice", HASH), pg_store.create_user("bob", HASH)
    cached_lookups(pg_store, alice.id)
    cached_lookups(pg_store, bob.id)

    run_sql(postgres_url, "TRUNCATE users")

    seen_within(lambda: pg_store.find_by_id(alice.id) is None)
    assert pg_store.find_by_id(bob.id) is None


def test_a_lost_listening_connection_sends_lookups_to_the_database_until_it_listens_again(
    pg_store, postgres_url, caplog
):
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)

    run_sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (LISTENER_APPLICATION_NAME,),
    )
    workers.rename_unannounced(postgres_url, alice.id, "renamed")

    with caplog.at_level(logging.WARNING, logger="src.storage.postgres"):
        seen_within(lambda: pg_store.find_by_id(alice.id).username == "renamed")
    assert "user cache: stopped listening" in caplog.text
    # Listening again after a successful query: the cache serves once more.
    cached_lookups(pg_store, alice.id)
    workers.rename_unannounced(postgres_url, alice.id, "renamed twice")
    assert pg_store.find_by_id(alice.id).username == "renamed"


def listeners_of(url: str) -> int:
    """How many sessions listen for changes on this database."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (LISTENER_APPLICATION_NAME,),
        ).fetchone()[0]


def test_a_process_that_only_checks_tokens_listens_for_changes_after_its_first_check(pg_store, postgres_url):
    # A worker serving /hello looks no user up by id (where listening starts otherwise): without listening it
    # read the store id again at every request, a second query beside the session check.
    alice = pg_store.create_user("alice", HASH)
    now = time.time()
    assert pg_store.create_session(alice, Session("s" * 22, alice.id, now, now + 3600, 1), now - 60)
    listening_before = listeners_of(postgres_url)
    checker = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    try:
        for _ in range(3):
            user, live, _store_id = checker.find_session_user(alice.id, "s" * 22)
            assert (user.username, live) == ("alice", True)

        assert listeners_of(postgres_url) == listening_before + 1
    finally:
        checker.close()


def test_a_process_that_only_issues_tokens_listens_after_its_first_store_id(pg_store, postgres_url):
    # Each token names the store's id (read at every sign-in): a worker that has only signed users in has
    # looked nobody up by id, and would read the id with a query at each sign-in if it never listened.
    listening_before = listeners_of(postgres_url)
    issuer = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    try:
        store_id = issuer.store_id()  # a query, then listening starts
        assert issuer.store_id() == store_id  # a query under the listening generation, kept

        assert listeners_of(postgres_url) == listening_before + 1
        with on_event_loop():  # from memory now: a query would raise WouldWait
            assert issuer.store_id() == store_id
    finally:
        issuer.close()


def test_a_closed_store_used_by_a_request_still_in_flight_opens_no_listening_session(postgres_url):
    # A worker's pool thread may finish a request after the store was closed (shutdown, a test's teardown):
    # its queries may reopen the pool, whose connections the pool closes, but a listening session opened then
    # would be left to the garbage collector.
    store = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    store.create_user("alice", HASH)
    store.close()

    assert store.store_id() is not None
    assert store.store_id() is not None

    assert listeners_of(postgres_url) == 0
    store.close()


def test_without_the_triggers_nothing_is_cached(pg_store, postgres_url, caplog):
    alice = pg_store.create_user("alice", HASH)
    run_sql(postgres_url, "DROP TRIGGER users_changed ON users")

    with caplog.at_level(logging.WARNING, logger="src.storage.postgres"):
        for _ in range(3):
            assert pg_store.find_by_id(alice.id).username == "alice"
    workers.rename_unannounced(postgres_url, alice.id, "renamed")

    assert not pg_store.user_cache.listening
    assert pg_store.find_by_id(alice.id).username == "renamed"
    assert "the users triggers are missing" in caplog.text


def test_a_schema_from_before_the_triggers_gets_them(postgres_url):
    for statement in previous_release.load().SCHEMA_SQL:
        if "TRIGGER" not in statement and "FUNCTION" not in statement:  # tables and indexes only
            run_sql(postgres_url, statement)

    store = PostgresStore(postgres_url, 1, 1, 5)
    try:
        alice = store.create_user("alice", HASH)
        cached_lookups(store, alice.id)
        run_sql(postgres_url, "DELETE FROM users WHERE id = %s", (alice.id,))
        seen_within(lambda: store.find_by_id(alice.id) is None)
    finally:
        store.close()


def test_an_outage_is_never_hidden_by_the_cache(own_server):
    url = own_server.create_database("app")
    store = PostgresStore(url, min_size=1, max_size=2, timeout=2)
    alice = store.create_user("alice", HASH)
    cached_lookups(store, alice.id)

    own_server.stop()
    with pytest.raises(StoreUnavailable):
        store.find_by_id(alice.id)

    own_server.start()
    assert store.find_by_id(alice.id) == alice
    cached_lookups(store, alice.id)
    store.close()


def test_a_store_without_the_cache_always_queries(pg_store, postgres_url):
    store = PostgresStore(postgres_url, 1, 1, 5, user_cache=False)
    try:
        alice = store.create_user("alice", HASH)
        for _ in range(3):
            store.find_by_id(alice.id)
        workers.rename_unannounced(postgres_url, alice.id, "renamed")
        assert store.find_by_id(alice.id).username == "renamed"
    finally:
        store.close()


class ShiftedClock:
    """The ``time`` module of src/storage/postgres.py, with ``monotonic()`` moved forward by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_cached_users_expire_after_the_60_second_ttl(pg_store, postgres_url, monkeypatch):
    clock = ShiftedClock()
    monkeypatch.setattr(postgres_module, "time", clock)
    alice = pg_store.create_user("alice", HASH)
    cached_lookups(pg_store, alice.id)
    workers.rename_unannounced(postgres_url, alice.id, "renamed")

    clock.offset = 55.0
    assert pg_store.find_by_id(alice.id).username == "alice"  # not yet: cached less than 60 s ago
    clock.offset = 61.0
    assert pg_store.find_by_id(alice.id).username == "renamed"


def test_a_full_cache_drops_its_oldest_user(pg_store, postgres_url, monkeypatch):
    monkeypatch.setattr("src.storage.postgres.USER_CACHE_MAX_ENTRIES", 1)
    alice, bob = pg_store.create_user("alice", HASH), pg_store.create_user("bob", HASH)
    cached_lookups(pg_store, alice.id)
    cached_lookups(pg_store, bob.id)

    workers.rename_unannounced(postgres_url, alice.id, "alice renamed")
    workers.rename_unannounced(postgres_url, bob.id, "bob renamed")

    assert pg_store.find_by_id(bob.id).username == "bob"  # still cached
    assert pg_store.find_by_id(alice.id).username == "alice renamed"  # dropped: read again


# ------------------------------------------------------------------------------------------------ revocations


def session_of(store: PostgresStore, user: User, session_id: str) -> str:
    now = time.time()
    assert store.create_session(user, Session(session_id, user.id, now, now + 3600, 1), now - 60)
    return session_id


def checked_from_the_cache(store: PostgresStore, user: User, session_id: str) -> None:
    """Check a token's user and session until ``store`` answers from its cache: then on the event loop,
    where a query would raise WouldWait."""
    for _ in range(3):  # miss and start listening; miss and remember; hit
        assert store.find_session_user(user.id, session_id)[:2] == (user, True)
    with on_event_loop():
        assert store.find_session_user(user.id, session_id)[:2] == (user, True)


def test_a_token_check_is_answered_from_the_cache_without_a_query(pg_store):
    alice = pg_store.create_user("alice", HASH)

    checked_from_the_cache(pg_store, alice, session_of(pg_store, alice, "s" * 22))


def test_right_after_another_process_ends_a_session_the_cache_no_longer_accepts_it(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    checker = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    try:
        for round_ in range(20):
            session_id = session_of(pg_store, alice, f"{round_:02d}" + "s" * 20)
            checked_from_the_cache(checker, alice, session_id)

            assert pg_store.end_session(session_id)

            with on_event_loop(), pytest.raises(WouldWait):  # not in the cache any more: it would query
                checker.find_session_user(alice.id, session_id)
            assert checker.find_session_user(alice.id, session_id)[:2] == (alice, False)
        assert checker.user_cache.listening  # it confirmed every change: nobody ended its session
    finally:
        checker.close()


@pytest.mark.parametrize(
    "revoke",
    [
        lambda store, user, session_id: store.end_session(session_id),
        lambda store, user, session_id: store.end_sessions_of(user.id),
        lambda store, user, session_id: store.change_password(
            user.id, HASH, "new " + HASH, end_sessions=True
        ),
        lambda store, user, session_id: store.set_disabled(user.id, True),
        lambda store, user, session_id: store.delete_user(user.id),
    ],
    ids=["logout", "sessions-revoke", "password-change", "disable", "delete"],
)
def test_a_revocation_returns_only_once_a_slow_listener_has_confirmed_it(pg_store, postgres_url, revoke):
    alice = pg_store.create_user("alice", HASH)
    session_id = session_of(pg_store, alice, "s" * 22)
    slow = workers.Listener(postgres_url, delay=0.3)
    try:
        assert revoke(pg_store, alice, session_id)

        assert slow.confirmed.is_set()
        assert slow.alive()  # it answered: its session goes on
    finally:
        slow.close()


def test_a_listener_that_never_confirms_is_ended_and_the_revocation_returns(pg_store, postgres_url, caplog):
    alice = pg_store.create_user("alice", HASH)
    session_id = session_of(pg_store, alice, "s" * 22)
    checked_from_the_cache(pg_store, alice, session_id)
    stuck = workers.Listener(postgres_url, delay=None)
    try:
        with caplog.at_level(logging.WARNING, logger="src.storage.postgres"):
            assert pg_store.end_session(session_id)

        assert not stuck.alive()
        assert "1 listening session(s) did not confirm a change within 1.0 s; ending them" in caplog.text
        assert pg_store.user_cache.listening  # this process confirmed: its session goes on
    finally:
        stuck.close()


def test_a_refresh_token_used_twice_ends_the_session_in_every_cache_at_once(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    session_id = session_of(pg_store, alice, "s" * 22)
    checker = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    try:
        checked_from_the_cache(checker, alice, session_id)
        now = time.time()
        pg_store.rotate_refresh_token(session_id, 1, now, 3600, 3600)

        with pytest.raises(RefreshRefused):
            pg_store.rotate_refresh_token(session_id, 1, now, 3600, 3600)  # spent: the session ends

        with on_event_loop(), pytest.raises(WouldWait):
            checker.find_session_user(alice.id, session_id)
    finally:
        checker.close()


def test_a_listener_past_descriptor_1024_still_confirms(pg_store, postgres_url, caplog):
    # A worker may hold thousands of client connections: its listening connection then gets a descriptor
    # that select() cannot take, and a listener that could not wait on it would be ended at every logout.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.fail(f"this test needs a descriptor limit of 2048 or more, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    alice = pg_store.create_user("alice", HASH)
    session_id = session_of(pg_store, alice, "s" * 22)
    checker = PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5)
    try:
        checked_from_the_cache(checker, alice, session_id)
        assert checker.user_cache._conn.pgconn.socket > 1024

        with caplog.at_level(logging.WARNING, logger="src.storage.postgres"):
            assert pg_store.end_session(session_id)

        assert "did not confirm" not in caplog.text
        assert checker.user_cache.listening
    finally:
        checker.close()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

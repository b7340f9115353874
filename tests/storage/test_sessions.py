"""Session storage in both stores: atomic rotation, reuse ending the session, changes made elsewhere seen at
once, logins racing a password change, pruning, and a sessions file that cannot be read."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from harness import wait_until
from src.lifecycle import WouldWait, on_event_loop
from src.storage import JsonFileStore, PostgresStore, RefreshRefused, Session, StoreUnavailable, UserStore
from src.storage import postgres as postgres_module
from tests.storage import workers

HASH = workers.HASH
OTHER_HASH = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXIgc2FsdA$b3RoZXIgaGFzaCBvZiBhIHBhc3N3b3Jk"
DAY = 86_400.0


@pytest.fixture(params=["json", "postgresql"])
def store(request: pytest.FixtureRequest) -> UserStore:
    return request.getfixturevalue(f"{'json' if request.param == 'json' else 'pg'}_store")


@pytest.fixture
def second_store(store: UserStore, postgres_url_if_needed) -> UserStore:
    """Another store on the same data, as another worker process holds it."""
    other = (
        JsonFileStore(store.path)
        if isinstance(store, JsonFileStore)
        else PostgresStore(postgres_url_if_needed, min_size=1, max_size=2, timeout=5)
    )
    yield other
    other.close()


@pytest.fixture
def postgres_url_if_needed(request: pytest.FixtureRequest, store: UserStore) -> str | None:
    return request.getfixturevalue("postgres_url") if isinstance(store, PostgresStore) else None


SID = "S" * 22


def start(store: UserStore, user, session_id: str = SID, now: float | None = None):
    now = time.time() if now is None else now
    session = Session(session_id, user.id, now, now + DAY)
    assert store.create_session(user, session, prune_before=now - 3600)
    return session


class FrozenMonotonic:
    """The clock of the PostgreSQL user and session cache, stopped: no cached entry can expire."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def cache_clock_stopped(monkeypatch):
    """While a test waits for a change, the cache's TTL cannot be what ends a cached session."""
    monkeypatch.setattr(postgres_module, "time", FrozenMonotonic())


def seen_within(check) -> float:
    """Wait (up to 15 s, room for a loaded machine) until ``check()`` holds. With the cache's clock stopped,
    a change seen at all was seen through the store's own invalidation, never through the TTL."""
    return wait_until(check, timeout=15.0, interval=0.001, what="the change to be seen")


def test_rotation_spends_the_token_and_renews_the_expiry(store):
    alice = store.create_user("alice", HASH)
    session = start(store, alice, now=1000.0)

    renewed = store.rotate_refresh_token(SID, 1, now=2000.0, absolute=30 * DAY, idle=DAY)

    assert renewed == Session(session.id, alice.id, 1000.0, 2000.0 + DAY, generation=2)
    for unknown_session, generation in (
        ("U" * 22, 1),
        (SID, 3),
    ):  # no such session; a generation never issued
        with pytest.raises(RefreshRefused) as refused:
            store.rotate_refresh_token(unknown_session, generation, now=2001.0, absolute=30 * DAY, idle=DAY)
        assert refused.value.reason == "unknown"
    assert store.session_user(SID) == alice.id


@pytest.mark.parametrize("spent", [1, 2])
def test_presenting_a_spent_generation_ends_the_session(store, spent):
    alice = store.create_user("alice", HASH)
    session = start(store, alice)
    for generation in (1, 2):
        store.rotate_refresh_token(SID, generation, now=time.time(), absolute=30 * DAY, idle=DAY)

    with pytest.raises(RefreshRefused) as refused:
        store.rotate_refresh_token(SID, spent, now=time.time(), absolute=30 * DAY, idle=DAY)

    assert refused.value.reason == "reused"
    assert store.session_user(session.id) is None
    with pytest.raises(RefreshRefused) as after:
        store.rotate_refresh_token(SID, 3, now=time.time(), absolute=30 * DAY, idle=DAY)
    assert after.value.reason == "unknown"


def test_an_expired_session_refuses_rotation_and_keeps_its_token_unspent(store):
    alice = store.create_user("alice", HASH)
    start(store, alice, now=1000.0)

    for _ in range(2):  # still "expired", not "reused": the failed attempt spent nothing
        with pytest.raises(RefreshRefused) as refused:
            store.rotate_refresh_token(SID, 1, now=1000.0 + DAY, absolute=30 * DAY, idle=DAY)
        assert refused.value.reason == "expired"


def test_twenty_concurrent_rotations_of_one_token_let_exactly_one_through(store):
    alice = store.create_user("alice", HASH)
    start(store, alice)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def rotate(n: int) -> None:
        barrier.wait()
        try:
            store.rotate_refresh_token(SID, 1, now=time.time(), absolute=30 * DAY, idle=DAY)
            outcomes.append("ok")
        except RefreshRefused as refused:
            outcomes.append(refused.reason)

    threads = [threading.Thread(target=rotate, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes.count("ok") == 1
    assert len(outcomes) == 20
    assert set(outcomes) - {"ok"} <= {"reused", "unknown"}  # "unknown" once a reuse has ended the session


@pytest.mark.usefixtures("cache_clock_stopped")
def test_a_session_ended_through_another_store_is_seen_at_once(store, second_store):
    alice = store.create_user("alice", HASH)
    session = start(store, alice)
    for _ in range(3):  # cached (PostgreSQL) or parsed (JSON) in this store
        assert store.session_user(session.id) == alice.id

    assert second_store.end_session(session.id) is True

    seen_within(lambda: store.session_user(session.id) is None)
    assert second_store.end_session(session.id) is False


def test_a_password_change_ends_every_session_of_the_user_only(store):
    alice, bob = store.create_user("alice", HASH), store.create_user("bob", HASH)
    first, second = start(store, alice, "A" * 22), start(store, alice, "B" * 22)
    bobs = start(store, bob, "C" * 22)

    assert store.change_password(alice.id, HASH, OTHER_HASH, end_sessions=True)

    assert store.session_user(first.id) is None
    assert store.session_user(second.id) is None
    assert store.session_user(bobs.id) == bob.id
    assert store.find_by_id(alice.id).password_hash == OTHER_HASH


def test_a_password_change_from_a_stale_hash_changes_nothing(store):
    alice = store.create_user("alice", HASH)
    session = start(store, alice)

    assert not store.change_password(alice.id, "not the hash", OTHER_HASH, end_sessions=True)

    assert store.session_user(session.id) == alice.id
    assert store.find_by_id(alice.id).password_hash == HASH


def test_a_rehash_keeps_the_sessions(store):
    alice = store.create_user("alice", HASH)
    session = start(store, alice)

    assert store.change_password(alice.id, HASH, OTHER_HASH, end_sessions=False)

    assert store.session_user(session.id) == alice.id


def test_a_login_verified_against_an_old_hash_starts_no_session(store):
    alice = store.create_user("alice", HASH)
    store.change_password(alice.id, HASH, OTHER_HASH, end_sessions=True)

    now = time.time()
    assert not store.create_session(alice, Session("S" * 22, alice.id, now, now + DAY), now)
    assert store.session_user("S" * 22) is None


def test_deleting_a_user_ends_its_sessions(store):
    alice = store.create_user("alice", HASH)
    session = start(store, alice)

    assert store.delete_user(alice.id)

    assert store.session_user(session.id) is None
    with pytest.raises(RefreshRefused):
        store.rotate_refresh_token(SID, 1, now=time.time(), absolute=30 * DAY, idle=DAY)


def test_logins_prune_sessions_expired_before_the_cutoff(store):
    alice = store.create_user("alice", HASH)
    old = Session("O" * 22, alice.id, 1000.0, 2000.0)
    assert store.create_session(alice, old, prune_before=0.0)

    start(store, alice, now=10_000.0)  # prunes what expired before 10_000 - 3600

    assert store.session_user(old.id) is None


def test_forgetting_failed_logins_takes_the_keys_and_the_suffix_only(store):
    now = time.time()
    keys = ("pair:10.0.0.1|alice", "pair:10.0.0.2|alice", "user:alice", "pair:10.0.0.1|malice", "user:malice")
    for key in keys:
        store.record_login_failure(key, now, 300)

    store.forget_login_failures(["user:alice"], "|alice")

    assert [store.login_failures(key, now, 300)[0] for key in keys] == [0, 0, 0, 1, 1]


# ------------------------------------------------------------------------------------------------ JSON only


def test_an_unreadable_sessions_file_is_unavailable_and_left_alone(json_store, data_file: Path):
    alice = json_store.create_user("alice", HASH)
    start(json_store, alice)
    sessions_file = Path(str(data_file) + ".sessions")
    sessions_file.write_bytes(b'{"version": 1, "sessions": [')

    with pytest.raises(StoreUnavailable, match="unreadable"):
        json_store.session_user("S" * 22)
    with pytest.raises(StoreUnavailable):
        json_store.end_session("S" * 22)
    assert sessions_file.read_bytes() == b'{"version": 1, "sessions": ['


def test_ten_thousand_refreshes_of_one_session_leave_a_sessions_file_under_4_kib(json_store, data_file: Path):
    alice = json_store.create_user("alice", HASH)
    start(json_store, alice)
    sessions_file = Path(str(data_file) + ".sessions")
    for generation in range(1, 10_001):
        json_store.rotate_refresh_token(SID, generation, now=time.time(), absolute=30 * DAY, idle=DAY)
        if generation == 100:  # a file growing with the refreshes is over 4 KiB by now: fail early
            assert sessions_file.stat().st_size <= 4096

    assert sessions_file.stat().st_size <= 4096
    with pytest.raises(RefreshRefused) as refused:  # the first token, spent 10,000 refreshes ago
        json_store.rotate_refresh_token(SID, 1, now=time.time(), absolute=30 * DAY, idle=DAY)
    assert refused.value.reason == "reused"


def test_sessions_of_the_earlier_format_keep_their_access_tokens_but_refresh_no_more(
    json_store, data_file: Path
):
    alice = json_store.create_user("alice", HASH)
    sessions_file = Path(str(data_file) + ".sessions")
    earlier = {
        "version": 1,
        "sessions": [[SID, alice.id, 1000.0, 9e12]],
        "refresh_tokens": {"ab12": [SID, 0]},
    }
    sessions_file.write_text(json.dumps(earlier))

    assert json_store.session_user(SID) == alice.id
    with pytest.raises(RefreshRefused) as refused:
        json_store.rotate_refresh_token(SID, 1, now=time.time(), absolute=30 * DAY, idle=DAY)
    assert refused.value.reason == "unknown"
    assert json_store.end_session(SID) is True
    assert json.loads(sessions_file.read_text()) == {"version": 2, "sessions": []}


def test_a_large_sessions_file_is_parsed_on_the_pool_not_on_the_event_loop(json_store, data_file: Path):
    alice = json_store.create_user("alice", HASH)
    start(json_store, alice)
    sessions_file = Path(str(data_file) + ".sessions")
    doc = json.loads(sessions_file.read_text())
    doc["sessions"] += [[f"{n:022d}", alice.id, 1000.0, 9e12, 1] for n in range(6000)]  # about 330 KB
    sessions_file.write_text(json.dumps(doc))

    with pytest.raises(WouldWait), on_event_loop():
        json_store.session_user(SID)
    assert json_store.session_user(SID) == alice.id  # on the pool
    with on_event_loop():  # parsed already: one stat
        assert json_store.session_user(f"{5999:022d}") == alice.id


# ------------------------------------------------------------------------------------------- PostgreSQL only


@pytest.mark.usefixtures("cache_clock_stopped")
def test_truncating_the_sessions_empties_every_cache(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    session = start(pg_store, alice)
    for _ in range(3):
        assert pg_store.session_user(session.id) == alice.id
    assert pg_store.user_cache.listening

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE sessions CASCADE")

    seen_within(lambda: pg_store.session_user(session.id) is None)


def test_refreshes_keep_one_refresh_tokens_row_per_session(pg_store, postgres_url):
    alice = pg_store.create_user("alice", HASH)
    start(pg_store, alice)
    for generation in range(1, 51):
        pg_store.rotate_refresh_token(SID, generation, now=time.time(), absolute=30 * DAY, idle=DAY)

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute("SELECT hash FROM refresh_tokens WHERE session_id = %s", (SID,)).fetchall()
    assert rows == [(f"{SID}.51",)]
    with pytest.raises(RefreshRefused) as refused:
        pg_store.rotate_refresh_token(SID, 50, now=time.time(), absolute=30 * DAY, idle=DAY)
    assert refused.value.reason == "reused"


def test_a_database_of_the_earlier_schema_gains_the_session_tables_at_startup(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "username text NOT NULL UNIQUE, password_hash text NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('alice', %s)", (HASH,))

    with PostgresStore(postgres_url, min_size=1, max_size=2, timeout=5) as store:
        alice = store.find_by_username("alice")
        session = start(store, alice)
        assert store.session_user(session.id) == alice.id

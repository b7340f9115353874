"""Login failures shared by every worker, for both stores: counting inside the window, pruning, clearing."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import psycopg
import pytest

from src.storage import JsonFileStore, PostgresStore
from src.storage import json_file as json_file_module

from . import workers

NOW = 1_800_000_000.0
WINDOW = 300.0
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(params=["json", "postgres"])
def target(request, tmp_path):
    """Where a store keeps its data: a data file path or a PostgreSQL URL."""
    if request.param == "json":
        return str(tmp_path / "data.json")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(target):
    opened = workers.open_store(target)
    yield opened
    opened.close()


def test_a_key_without_failures_has_zero_and_no_oldest(store):
    assert store.login_failures("10.0.0.1|alice", NOW, WINDOW) == (0, None)


def test_failures_inside_the_window_are_counted_with_the_oldest_timestamp(store):
    for offset in (0, 10, 20):
        store.record_login_failure("10.0.0.1|alice", NOW + offset, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW + 30, WINDOW) == (3, NOW)


def test_failures_older_than_the_window_are_not_counted(store):
    store.record_login_failure("10.0.0.1|alice", NOW, WINDOW)
    store.record_login_failure("10.0.0.1|alice", NOW + 200, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW + WINDOW + 1, WINDOW) == (1, NOW + 200)
    assert store.login_failures("10.0.0.1|alice", NOW + 600, WINDOW) == (0, None)


def test_failures_are_counted_per_key(store):
    store.record_login_failure("10.0.0.1|alice", NOW, WINDOW)
    store.record_login_failure("10.0.0.2|alice", NOW, WINDOW)
    store.record_login_failure("10.0.0.2|alice", NOW + 1, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW + 2, WINDOW) == (1, NOW)
    assert store.login_failures("10.0.0.2|alice", NOW + 2, WINDOW) == (2, NOW)
    assert store.login_failures("10.0.0.1|bob", NOW + 2, WINDOW) == (0, None)


def test_clear_forgets_only_that_key(store):
    store.record_login_failure("10.0.0.1|alice", NOW, WINDOW)
    store.record_login_failure("10.0.0.1|bob", NOW, WINDOW)

    store.clear_login_failures("10.0.0.1|alice")
    store.clear_login_failures("10.0.0.1|nobody")

    assert store.login_failures("10.0.0.1|alice", NOW + 1, WINDOW) == (0, None)
    assert store.login_failures("10.0.0.1|bob", NOW + 1, WINDOW) == (1, NOW)


def test_failures_are_shared_between_store_instances(store, target):
    with workers.open_store(target) as other_worker:
        other_worker.record_login_failure("10.0.0.1|alice", NOW, WINDOW)
        assert store.login_failures("10.0.0.1|alice", NOW + 1, WINDOW) == (1, NOW)
        store.record_login_failure("10.0.0.1|alice", NOW + 1, WINDOW)
        assert other_worker.login_failures("10.0.0.1|alice", NOW + 2, WINDOW) == (2, NOW)
        other_worker.clear_login_failures("10.0.0.1|alice")

    assert store.login_failures("10.0.0.1|alice", NOW + 3, WINDOW) == (0, None)


def test_failures_recorded_by_several_processes_at_once_are_all_counted(store, target):
    workers.race(workers.record_failures, [(target, "10.0.0.9|alice", 20, NOW + n) for n in range(3)])

    assert store.login_failures("10.0.0.9|alice", NOW + 10, WINDOW) == (60, NOW)


def test_recording_a_failure_prunes_every_entry_older_than_the_window(store, target):
    store.record_login_failure("10.0.0.1|old", NOW, WINDOW)
    store.record_login_failure("10.0.0.1|new", NOW + WINDOW + 5, WINDOW)

    if isinstance(store, PostgresStore):
        with psycopg.connect(target) as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM login_failures").fetchall()]
    else:
        keys = list(json.loads(Path(target + ".failures").read_bytes())["failures"])
    assert keys == ["10.0.0.1|new"]


# --- JSON file specifics ------------------------------------------------------------------------------------


def test_failures_never_rewrite_the_user_file(tmp_path):
    store = JsonFileStore(tmp_path / "data.json")
    store.create_user("alice", workers.HASH)
    before = (tmp_path / "data.json").stat()

    store.record_login_failure("10.0.0.1|alice", NOW, WINDOW)
    store.clear_login_failures("10.0.0.1|alice")

    after = (tmp_path / "data.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_clearing_without_failures_writes_nothing(tmp_path):
    store = JsonFileStore(tmp_path / "data.json")

    store.clear_login_failures("10.0.0.1|alice")

    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_failures_file_counts_as_empty_and_is_replaced(tmp_path, caplog):
    (tmp_path / "data.json.failures").write_text('{"failures": [1, 2]}')
    store = JsonFileStore(tmp_path / "data.json")

    assert store.login_failures("10.0.0.1|alice", NOW, WINDOW) == (0, None)
    store.record_login_failure("10.0.0.1|alice", NOW, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW, WINDOW) == (1, NOW)
    assert "counting it as empty" in caplog.text


def test_failures_file_keeps_only_the_most_recently_failing_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(json_file_module, "MAX_FAILURES_PER_KEY", 3)
    monkeypatch.setattr(json_file_module, "MAX_FAILURE_KEYS", 2)
    store = JsonFileStore(tmp_path / "data.json")

    for n in range(5):
        store.record_login_failure("10.0.0.1|alice", NOW + n, WINDOW)
    store.record_login_failure("10.0.0.2|bob", NOW + 10, WINDOW)
    store.record_login_failure("10.0.0.3|carol", NOW + 11, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW + 12, WINDOW) == (0, None)
    assert store.login_failures("10.0.0.2|bob", NOW + 12, WINDOW) == (1, NOW + 10)
    assert store.login_failures("10.0.0.3|carol", NOW + 12, WINDOW) == (1, NOW + 11)


def test_failures_per_key_are_capped_at_the_most_recent(tmp_path, monkeypatch):
    monkeypatch.setattr(json_file_module, "MAX_FAILURES_PER_KEY", 3)
    store = JsonFileStore(tmp_path / "data.json")

    for n in range(5):
        store.record_login_failure("10.0.0.1|alice", NOW + n, WINDOW)

    assert store.login_failures("10.0.0.1|alice", NOW + 5, WINDOW) == (3, NOW + 2)


def test_concurrent_reservations_never_pass_the_limit(target):
    """Ten processes released at once try five reservations each against a limit of 20: 20 are recorded."""
    start = SPAWN.Event()
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=workers.reserve_under_limit, args=(target, start, results.put))
        for _ in range(10)
    ]
    for process in processes:
        process.start()
    start.set()
    recorded = sum(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(60)

    assert recorded == 20


def test_a_refused_reservation_records_nothing(store):
    store.record_login_failure("user:alice", NOW, WINDOW)

    recorded, counts = store.reserve_attempt(
        ["user:alice", "addr:10.0.0.1"], NOW + 1, WINDOW, lambda c: False
    )

    assert (recorded, counts) == (False, [(1, NOW), (0, None)])
    assert store.login_failures("addr:10.0.0.1", NOW + 2, WINDOW) == (0, None)


def test_release_takes_back_one_attempt_of_each_key(store):
    store.reserve_attempt(["user:alice", "addr:10.0.0.1"], NOW, WINDOW, lambda c: True)
    store.reserve_attempt(["user:alice", "addr:10.0.0.1"], NOW + 1, WINDOW, lambda c: True)

    store.release_attempt(["user:alice", "addr:10.0.0.1"], NOW + 1)

    assert store.login_failures("user:alice", NOW + 2, WINDOW) == (1, NOW)
    assert store.login_failures("addr:10.0.0.1", NOW + 2, WINDOW) == (1, NOW)


def test_a_reservation_made_while_another_is_deciding_waits_for_its_outcome(target):
    """Two processes reserve under a limit of 1; the first is held inside the store's critical section until
    the second has entered too or waits for the lock (workers.CriticalSection): exactly one is recorded."""
    section = workers.CriticalSection()

    recorded = workers.race(workers.reserve_once_held, [(target, section)] * 2)

    assert sorted(recorded) == [False, True]

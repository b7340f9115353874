"""Several real processes (spawn) writing the JSON file at once, and writers killed in mid-write."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

from src.storage import JsonFileStore

from . import workers

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def start_event():
    with SPAWN.Manager() as manager:
        yield manager.Event()


def assert_valid_file_holding(path: Path, expected: dict[str, int]) -> dict:
    doc = json.loads(path.read_bytes())  # a torn file would fail to parse here
    stored = {user["username"]: user["id"] for user in doc["users"]}
    missing = {name: uid for name, uid in expected.items() if stored.get(name) != uid}
    assert not missing, f"acknowledged users lost or renumbered: {missing}"
    assert len(set(stored.values())) == len(stored)
    assert doc["next_id"] > max(stored.values(), default=0)
    return doc


def test_several_processes_writing_at_once_persist_every_user_with_unique_ids(data_file):
    processes, per_process = 4, 50
    created = [
        pair
        for pairs in workers.race(
            workers.register_many, [(str(data_file), f"p{n}", per_process) for n in range(processes)]
        )
        for pair in pairs
    ]

    ids = [uid for _, uid in created]
    assert len(created) == 200
    assert sorted(ids) == list(range(1, 201))
    assert_valid_file_holding(data_file, dict(created))
    reopened = JsonFileStore(data_file)
    assert [reopened.find_by_username(name).id for name, _ in created] == ids


def test_one_name_registered_by_several_processes_at_once_succeeds_exactly_once(data_file):
    names = [f"contested-{n}" for n in range(20)]  # 20 rounds, each released by the barrier

    per_process = workers.race(workers.register_each_once, [(str(data_file), names)] * 6)

    for round_number, name in enumerate(names):
        results = [ids[round_number] for ids in per_process]
        assert sorted(results, key=lambda r: r is None) == [round_number + 1, None, None, None, None, None]
        assert JsonFileStore(data_file).find_by_username(name).id == round_number + 1


def test_readers_never_see_a_partial_file_while_another_process_writes(data_file, start_event):
    store = JsonFileStore(data_file)
    store.create_users_bulk((f"seed{n}", workers.HASH) for n in range(5000))
    with SPAWN.Pool(3) as pool:
        readers = [
            pool.apply_async(workers.look_up_repeatedly, (str(data_file), "seed4999", 3000, start_event))
            for _ in range(2)
        ]
        writer = pool.apply_async(workers.register_many, (str(data_file), "w", 40, start_event))
        start_event.set()
        assert [reader.get(timeout=120) for reader in readers] == [3000, 3000]
        assert len(writer.get(timeout=120)) == 40


def read_acks(acks, into: dict[str, int]) -> None:
    while acks.poll():
        try:
            name, uid = acks.recv()
        except EOFError:
            return
        into[name] = uid


def kill_during_a_write(folder: Path, pid: int, limit: float) -> bool:
    """SIGKILL ``pid`` once its temp file appears (or after ``limit`` s); True when it was mid-write."""
    deadline = time.monotonic() + limit
    mid_write = False
    while time.monotonic() < deadline and not mid_write:
        mid_write = any(".tmp-" in name for name in os.listdir(folder))
    os.kill(pid, signal.SIGKILL)
    return mid_write


def test_sigkill_of_a_writer_in_the_middle_of_writes_keeps_every_acknowledged_user(data_file):
    # A larger file makes every write last longer, so the kills land inside writes, not between them.
    JsonFileStore(data_file).create_users_bulk((f"seed{n}", workers.HASH) for n in range(20_000))
    acknowledged: dict[str, int] = {}
    rng = random.Random(20261126)
    kills_mid_write = 0
    for round_number in range(4):
        receiver, sender = SPAWN.Pipe(duplex=False)
        writer = SPAWN.Process(
            target=workers.register_and_acknowledge, args=(str(data_file), f"r{round_number}", sender)
        )
        writer.start()
        sender.close()
        wanted = rng.randint(3, 12)
        deadline = time.monotonic() + 120
        while len([n for n in acknowledged if n.startswith(f"r{round_number}-")]) < wanted:
            assert time.monotonic() < deadline, "writer made no progress"
            if receiver.poll(0.05):
                read_acks(receiver, acknowledged)
        kills_mid_write += kill_during_a_write(data_file.parent, writer.pid, limit=2)
        writer.join(30)
        read_acks(receiver, acknowledged)
        receiver.close()
        assert writer.exitcode == -signal.SIGKILL

        doc = assert_valid_file_holding(data_file, acknowledged)
        assert len(doc["users"]) >= 20_000 + len(acknowledged)

    assert kills_mid_write >= 1, "no kill landed while a temp file was being written"
    # The next writer sweeps the temp files left by the killed ones and carries on with fresh ids.
    store = JsonFileStore(data_file)
    last = store.create_user("after-the-kills", workers.HASH)
    assert last.id == json.loads(data_file.read_bytes())["next_id"] - 1
    assert not [p for p in data_file.parent.iterdir() if ".tmp-" in p.name]


def test_a_name_registered_while_another_process_writes_it_is_refused(data_file):
    """The first process is held inside the user file's lock, between its duplicate check and its write,
    until the second has entered too or waits for the lock (workers.CriticalSection): one id, one refusal."""
    section = workers.CriticalSection()

    ids = workers.race(workers.register_once_held, [(str(data_file), "contested", section)] * 2)

    assert sorted(ids, key=lambda r: r is None) == [1, None]
    assert JsonFileStore(data_file).find_by_username("contested").id == 1

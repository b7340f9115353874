"""JsonFileStore on real files: records, ids, index reloads, corrupt files, full and read-only disks."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import re
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import pytest

from src.lifecycle import WouldWait, on_event_loop
from src.storage import JsonFileStore, StoreUnavailable, User, UsernameTaken
from src.storage import json_file as json_file_module

from . import workers
from .conftest import remount

HASH = workers.HASH


def read_doc(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_new_store_finds_nobody_and_creates_no_file(json_store, data_file):
    assert json_store.find_by_username("alice") is None
    assert json_store.find_by_id(1) is None
    assert not data_file.exists()
    assert not data_file.parent.exists()


def test_create_user_returns_user_found_by_name_and_by_id(json_store):
    user = json_store.create_user("alice", HASH)

    assert user == User(1, "alice", HASH)
    assert json_store.find_by_username("alice") == user
    assert json_store.find_by_id(1) == user


def test_find_by_username_is_exact_and_case_sensitive(json_store):
    json_store.create_user("alice", HASH)

    assert json_store.find_by_username("Alice") is None
    assert json_store.find_by_username("alice ") is None


def test_first_write_creates_folder_and_file_readable_by_owner_only(json_store, data_file):
    json_store.create_user("alice", HASH)

    assert stat.S_IMODE(data_file.stat().st_mode) == 0o600
    doc = read_doc(data_file)
    assert re.fullmatch("[0-9a-f]{32}", doc.pop("store_id"))
    assert doc == {
        "version": 1,
        "next_id": 2,
        "users": [{"id": 1, "username": "alice", "password_hash": HASH}],
    }


def test_duplicate_username_raises_username_taken_and_leaves_file_unchanged(json_store, data_file):
    json_store.create_user("alice", HASH)
    before = data_file.read_bytes()

    with pytest.raises(UsernameTaken):
        json_store.create_user("alice", "other-hash")

    assert data_file.read_bytes() == before


def test_unicode_username_round_trips(json_store, data_file):
    json_store.create_user("zoë", HASH)

    assert JsonFileStore(data_file).find_by_username("zoë").id == 1


def test_ids_are_stable_across_reopen(json_store, data_file):
    created = [json_store.create_user(name, HASH) for name in ("alice", "bob", "carol")]

    reopened = JsonFileStore(data_file)

    assert [reopened.find_by_username(u.username) for u in created] == created
    assert reopened.create_user("dave", HASH).id == 4


def test_ids_are_never_reused_after_a_user_is_removed(json_store, data_file):
    json_store.create_user("alice", HASH)
    bob = json_store.create_user("bob", HASH)

    assert json_store.delete_user(bob.id) is True
    assert json_store.find_by_id(bob.id) is None
    assert json_store.find_by_username("bob") is None
    assert JsonFileStore(data_file).create_user("carol", HASH).id == 3
    assert json_store.create_user("bob", HASH).id == 4


def test_delete_of_unknown_user_returns_false(json_store):
    json_store.create_user("alice", HASH)

    assert json_store.delete_user(99) is False


def test_bulk_create_assigns_consecutive_ids_in_one_write(json_store, data_file):
    json_store.create_user("first", HASH)

    count = json_store.create_users_bulk((f"user{n}", HASH) for n in range(1000))

    assert count == 1000
    assert json_store.find_by_username("user999").id == 1001
    doc = read_doc(data_file)
    assert doc["next_id"] == 1002
    assert len(doc["users"]) == 1001


def test_bulk_create_with_a_taken_name_writes_nothing(json_store, data_file):
    json_store.create_user("alice", HASH)
    before = data_file.read_bytes()

    with pytest.raises(UsernameTaken):
        json_store.create_users_bulk([("bob", HASH), ("alice", HASH)])
    with pytest.raises(UsernameTaken):
        json_store.create_users_bulk([("carol", HASH), ("carol", HASH)])

    assert data_file.read_bytes() == before
    assert json_store.find_by_username("bob") is None


def test_bulk_create_of_no_rows_returns_zero_and_creates_no_file(json_store, data_file):
    assert json_store.create_users_bulk([]) == 0
    assert not data_file.exists()


def test_index_reloads_after_another_process_writes(json_store, data_file):
    json_store.create_user("alice", HASH)
    assert json_store.find_by_username("p-0") is None

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(1) as pool:
        event = manager.Event()
        event.set()
        created = pool.apply(workers.register_many, (str(data_file), "p", 2, event))

    assert created == [("p-0", 2), ("p-1", 3)]
    assert json_store.find_by_username("p-1") == User(3, "p-1", HASH)
    assert json_store.create_user("bob", HASH).id == 4


@pytest.fixture
def parses(monkeypatch):
    """Names of the parse functions called, in order: "full", "appended" or "replaced"."""
    calls: list[str] = []
    real_full, real_appended = json_file_module._parse_users, json_file_module._parse_appended
    real_replaced = json_file_module._parse_replaced

    def full(*args):
        calls.append("full")
        return real_full(*args)

    def appended(*args):
        result = real_appended(*args)
        if result is not None:
            calls.append("appended")
        return result

    def replaced(*args):
        result = real_replaced(*args)
        if result is not None:
            calls.append("replaced")
        return result

    monkeypatch.setattr(json_file_module, "_parse_users", full)
    monkeypatch.setattr(json_file_module, "_parse_appended", appended)
    monkeypatch.setattr(json_file_module, "_parse_replaced", replaced)
    return calls


def test_lookups_do_not_parse_an_unchanged_file(json_store, parses):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(100))

    for n in range(50):
        assert json_store.find_by_username(f"user{n}") is not None
        assert json_store.find_by_id(n + 1) is not None

    assert parses == []


def test_a_registration_by_another_worker_is_indexed_without_a_full_parse(json_store, data_file, parses):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(100))
    other_worker = JsonFileStore(data_file)
    assert other_worker.find_by_id(1) is not None

    json_store.create_user("late", HASH)
    json_store.create_users_bulk([("later", HASH), ("latest", HASH)])

    assert other_worker.find_by_username("latest") == User(103, "latest", HASH)
    assert other_worker.find_by_username("late").id == 101
    assert other_worker.create_user("after", HASH).id == 104
    assert parses == ["full", "appended"]
    assert data_file.read_bytes() == json_file_module._encode_users(
        sorted(other_worker._users().users(), key=lambda u: u.id), 105, json_store.store_id()
    )


def test_a_removal_by_another_worker_is_seen_through_a_full_parse(json_store, data_file, parses):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(3))
    other_worker = JsonFileStore(data_file)
    assert other_worker.find_by_id(2) is not None

    json_store.delete_user(2)

    assert other_worker.find_by_id(2) is None
    assert other_worker.find_by_username("user1") is None
    assert parses == ["full", "full"]


def test_password_changes_by_another_worker_are_indexed_on_the_event_loop_without_a_full_parse(
    json_store, data_file, parses
):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(100))
    other_worker = JsonFileStore(data_file)
    assert other_worker.find_by_id(1) is not None
    longer, shorter = HASH + "-longer", HASH[:-5]

    json_store.change_password(50, HASH, longer, end_sessions=True)
    with on_event_loop():  # a token check on a worker's loop: no full parse there
        assert other_worker.find_by_id(50) == User(50, "user49", longer)
    json_store.change_password(100, HASH, shorter, end_sessions=False)
    json_store.change_password(50, longer, shorter, end_sessions=False)
    with on_event_loop():
        assert other_worker.find_by_username("user99") == User(100, "user99", shorter)
    with on_event_loop():
        assert other_worker.find_by_username("user49") == User(50, "user49", shorter)

    for n in range(100):
        expected = User(n + 1, f"user{n}", shorter if n in (49, 99) else HASH)
        assert other_worker.find_by_id(n + 1) == expected
        assert other_worker.find_by_username(f"user{n}") == expected
    assert parses == ["full", "replaced", "replaced"]
    assert other_worker.create_user("after", HASH).id == 101
    assert [u["password_hash"] for u in read_doc(data_file)["users"]].count(shorter) == 2


def test_a_removal_by_another_worker_is_parsed_on_the_pool_not_on_the_event_loop(json_store, data_file):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(3))
    other_worker = JsonFileStore(data_file)
    assert other_worker.find_by_id(2) is not None

    json_store.delete_user(2)

    with pytest.raises(WouldWait), on_event_loop():
        other_worker.find_by_id(1)
    assert other_worker.find_by_id(2) is None  # where waiting is fine
    with on_event_loop():
        assert other_worker.find_by_id(1) == User(1, "user0", HASH)


def test_an_invalid_appended_user_is_reported_by_the_full_parse(json_store, data_file):
    json_store.create_user("alice", HASH)
    assert json_store.find_by_id(1) is not None
    bad = data_file.read_bytes().replace(b'"next_id":2', b'"next_id":3')[:-2]
    data_file.write_bytes(bad + b',{"id":2,"username":"alice","password_hash":"h"}]}')

    with pytest.raises(StoreUnavailable, match="repeats username"):
        json_store.find_by_id(2)


def test_a_hand_formatted_file_is_read_and_rewritten_in_the_compact_layout(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    doc = {"version": 1, "next_id": 5, "users": [{"id": 4, "username": "alice", "password_hash": HASH}]}
    data_file.write_text(json.dumps(doc, indent=2))

    assert json_store.find_by_username("alice").id == 4
    assert json_store.create_user("bob", HASH).id == 5
    store_id = json_store.store_id().encode()
    assert data_file.read_bytes().startswith(
        b'{"version":1,"store_id":"%s","next_id":6,"users":[{"id":4,' % store_id
    )


def test_a_file_without_a_store_id_gets_one_when_a_token_needs_it(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    doc = {"version": 1, "next_id": 2, "users": [{"id": 1, "username": "alice", "password_hash": HASH}]}
    data_file.write_text(json.dumps(doc))

    store_id = json_store.store_id()

    assert re.fullmatch("[0-9a-f]{32}", store_id)
    assert read_doc(data_file) == {**doc, "store_id": store_id}
    assert JsonFileStore(data_file).store_id() == store_id


def test_a_store_created_afresh_has_another_store_id(json_store, data_file):
    json_store.create_user("alice", HASH)
    old = json_store.store_id()
    data_file.unlink()

    assert json_store.store_id() is None
    json_store.create_user("mallory", HASH)
    assert json_store.store_id() not in (None, old)


def test_a_symlinked_path_is_resolved_once_and_the_link_stays(tmp_path):
    target = tmp_path / "volume" / "users.json"
    target.parent.mkdir()
    link = tmp_path / "data.json"
    link.symlink_to(target)

    with JsonFileStore(link) as store:
        store.create_user("alice", HASH)
        store.create_user("bob", HASH)

    assert link.is_symlink()
    assert [user["username"] for user in read_doc(target)["users"]] == ["alice", "bob"]


def test_file_removed_by_an_operator_reads_as_empty(json_store, data_file):
    json_store.create_user("alice", HASH)
    data_file.unlink()

    assert json_store.find_by_username("alice") is None


def test_empty_file_is_corrupt_and_never_overwritten(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    data_file.write_bytes(b"")

    with pytest.raises(StoreUnavailable, match="empty"):
        json_store.find_by_username("alice")
    with pytest.raises(StoreUnavailable, match="empty"):
        json_store.create_user("alice", HASH)
    assert data_file.read_bytes() == b""


CORRUPT_CONTENTS = {
    "truncated json": b'{"version": 1, "next_id": 2, "users": [{"id": 1, "usern',
    "not utf-8": b"\xff\xfe\x00garbage",
    "a list": b"[]",
    "unknown version": b'{"version": 99, "next_id": 1, "users": []}',
    "next_id not an integer": b'{"version": 1, "next_id": "2", "users": []}',
    "user not an object": b'{"version": 1, "next_id": 2, "users": [1]}',
    "id at or above next_id": (
        b'{"version": 1, "next_id": 2, "users": [{"id": 2, "username": "a", "password_hash": "h"}]}'
    ),
    "missing hash": b'{"version": 1, "next_id": 2, "users": [{"id": 1, "username": "a"}]}',
    "repeated username": (
        b'{"version": 1, "next_id": 3, "users": [{"id": 1, "username": "a", "password_hash": "h"},'
        b' {"id": 2, "username": "a", "password_hash": "h"}]}'
    ),
}


@pytest.mark.parametrize("content", CORRUPT_CONTENTS.values(), ids=CORRUPT_CONTENTS.keys())
def test_corrupt_file_raises_store_unavailable_and_is_never_overwritten(
    json_store, data_file, content, caplog
):
    data_file.parent.mkdir(parents=True)
    data_file.write_bytes(content)

    with caplog.at_level(logging.ERROR):
        for call in (
            lambda: json_store.find_by_username("a"),
            lambda: json_store.find_by_id(1),
            lambda: json_store.create_user("new", HASH),
            lambda: json_store.create_users_bulk([("bulk", HASH)]),
            json_store.check_ready,
        ):
            with pytest.raises(StoreUnavailable, match="is unreadable"):
                call()

    assert data_file.read_bytes() == content
    assert len([r for r in caplog.records if "is unreadable" in r.getMessage()]) == 1


def test_repaired_file_is_used_again(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    data_file.write_bytes(b"{broken")
    with pytest.raises(StoreUnavailable):
        json_store.find_by_username("alice")

    JsonFileStore(data_file.with_name("good.json")).create_user("alice", HASH)
    os.replace(data_file.with_name("good.json"), data_file)

    assert json_store.find_by_username("alice").id == 1


def test_data_path_that_is_a_folder_raises_store_unavailable(tmp_path):
    (tmp_path / "data.json").mkdir()
    store = JsonFileStore(tmp_path / "data.json")

    with pytest.raises(StoreUnavailable, match="cannot read data file"):
        store.find_by_username("alice")


def test_parent_that_is_a_file_raises_store_unavailable_on_write(tmp_path):
    (tmp_path / "blocker").write_text("")
    store = JsonFileStore(tmp_path / "blocker" / "data.json")

    with pytest.raises(StoreUnavailable, match="cannot open lock file"):
        store.create_user("alice", HASH)
    with pytest.raises(StoreUnavailable, match="cannot read data file"):
        store.find_by_username("alice")


def test_stale_temp_file_of_a_killed_writer_is_removed_on_next_write(json_store, data_file):
    json_store.create_user("alice", HASH)
    stale = data_file.with_name("data.json.tmp-abandoned")
    stale.write_text("{half")
    stale_failures = data_file.with_name("data.json.failures.tmp-abandoned")
    stale_failures.write_text("{half")

    JsonFileStore(data_file).create_user("bob", HASH)

    assert not stale.exists()
    assert stale_failures.exists(), "only the failures writer, under its own lock, may remove its temp files"
    JsonFileStore(data_file).record_login_failure("10.0.0.1|bob", 1.0, 60)
    assert sorted(p.name for p in data_file.parent.iterdir()) == [
        "data.json",
        "data.json.failures",
        "data.json.failures.lock",
        "data.json.lock",
    ]


def test_close_drops_the_index_and_the_store_still_works(json_store):
    json_store.create_user("alice", HASH)
    json_store.close()

    assert json_store.find_by_username("alice").id == 1


def test_store_works_as_a_context_manager(data_file):
    with JsonFileStore(data_file) as store:
        store.create_user("alice", HASH)

    assert repr(store) == f"JsonFileStore({str(data_file)!r})"


def test_check_ready_passes_before_the_first_write_and_creates_nothing(json_store, data_file):
    assert json_store.check_ready() is None  # StoreUnavailable otherwise
    assert not data_file.exists()


def test_check_ready_passes_with_a_written_file(json_store, data_file):
    json_store.create_user("alice", HASH)

    assert json_store.check_ready() is None  # StoreUnavailable otherwise
    assert json.loads(data_file.read_bytes())["next_id"] == 2


# --- full disk and read-only folder (real tmpfs mounts, root only) ------------------------------------------


def fill_the_disk(filler: Path) -> None:
    """Write ``filler`` until the file system reports ENOSPC."""
    with open(filler, "wb", buffering=0) as file:
        while True:
            try:
                file.write(b"x" * 4096)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return
                raise


@pytest.mark.system
def test_full_disk_raises_store_unavailable_and_keeps_the_previous_file(tmpfs, caplog):
    folder = tmpfs("64k")
    store = JsonFileStore(folder / "data.json")
    store.create_user("alice", HASH)
    before = (folder / "data.json").read_bytes()
    filler = folder / "filler"
    fill_the_disk(filler)

    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable, match="no space left on device"):
        store.create_users_bulk((f"user{n}", HASH) for n in range(100))

    assert (folder / "data.json").read_bytes() == before
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
    assert "no space left on device" in caplog.text
    assert len(caplog.records) == 1
    with pytest.raises(StoreUnavailable, match="no space left"):
        store.check_ready()
    assert store.find_by_username("alice").id == 1

    filler.unlink()
    assert store.create_user("bob", HASH).id == 2


@pytest.mark.system
def test_read_only_folder_raises_store_unavailable_and_keeps_the_previous_file(tmpfs, caplog):
    folder = tmpfs("1m")
    store = JsonFileStore(folder / "data.json")
    store.create_user("alice", HASH)
    before = (folder / "data.json").read_bytes()
    remount(folder, "ro")

    with caplog.at_level(logging.ERROR), pytest.raises(StoreUnavailable, match="read-only file system"):
        store.create_user("bob", HASH)
    with pytest.raises(StoreUnavailable, match="not writable"):
        store.check_ready()

    assert (folder / "data.json").read_bytes() == before
    assert "read-only file system" in caplog.text
    assert store.find_by_username("alice").id == 1
    remount(folder, "rw")
    assert store.create_user("bob", HASH).id == 2


@pytest.mark.system
def test_read_only_folder_before_the_first_write_is_not_ready(tmpfs):
    folder = tmpfs("64k")
    remount(folder, "ro")
    store = JsonFileStore(folder / "sub" / "data.json")

    with pytest.raises(StoreUnavailable, match="not writable"):
        store.check_ready()
    with pytest.raises(StoreUnavailable, match="read-only file system"):
        store.create_user("alice", HASH)


def as_unprivileged(work) -> str:
    """``work()`` in a process without root's powers; its StoreUnavailable message, or "" when it passed.

    As root, a forked child drops to nobody (65534) so that the kernel, not the test, answers the permission
    checks; as any other user, the test already has no such powers and runs ``work`` itself.
    """
    if os.geteuid() != 0:
        try:
            work()
        except StoreUnavailable as exc:
            return str(exc)
        return ""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # fork of a threaded process: the child only runs work
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        message = ""
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            work()
        except StoreUnavailable as exc:
            message = str(exc)
        except BaseException as exc:  # noqa: BLE001 - anything else is reported to the parent as such
            message = f"unexpected {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    os.waitpid(pid, 0)
    return message


def test_data_file_that_is_not_writable_is_not_ready():
    # A folder anybody may write in, holding a data file that only its owner may write.
    folder = Path(tempfile.mkdtemp(prefix="not-writable-"))
    try:
        os.chmod(folder, 0o777)  # noqa: S103 - the unprivileged user must reach the folder
        data_file = folder / "data.json"
        JsonFileStore(data_file).create_user("alice", HASH)
        os.chmod(data_file, 0o444 if os.geteuid() != 0 else 0o644)

        message = as_unprivileged(lambda: JsonFileStore(data_file).check_ready())

        assert message == f"data file {data_file} is not readable and writable"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_users_written_by_hand_out_of_id_order_are_found_by_id_and_name(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    users = [{"id": i, "username": f"user{i}", "password_hash": HASH} for i in (7, 2, 9, 4)]
    data_file.write_text(json.dumps({"version": 1, "next_id": 10, "users": users}, separators=(",", ":")))

    for i in (7, 2, 9, 4):
        assert json_store.find_by_id(i) == User(i, f"user{i}", HASH)
        assert json_store.find_by_username(f"user{i}") == User(i, f"user{i}", HASH)
    assert json_store.find_by_id(3) is None
    assert json_store.create_user("next", HASH).id == 10
    assert json_store.find_by_id(2).username == "user2"


def test_spaces_inside_compact_user_objects_are_read_as_written(json_store, data_file):
    data_file.parent.mkdir(parents=True)
    data_file.write_bytes(
        b'{"version":1,"next_id":3,"users":[{"id": 1, "username": "a\\u00efda", "password_hash": "h1"},'
        b'{"id":2,"username":"bob","password_hash":"h2"}]}'
    )

    assert json_store.find_by_username("a\u00efda") == User(1, "a\u00efda", "h1")
    assert json_store.find_by_id(2) == User(2, "bob", "h2")
    json_store.create_user("carol", HASH)
    assert [u["username"] for u in read_doc(data_file)["users"]] == ["a\u00efda", "bob", "carol"]


def test_user_objects_with_extra_fields_are_found_and_names_that_look_like_json_stay_exact(
    json_store, data_file
):
    data_file.parent.mkdir(parents=True)
    tricky = 'x"},{"id":9,"username":"mallory'
    users = [
        {"id": 1, "username": tricky, "password_hash": "h1", "note": {"id": 5}},
        {"id": 2, "username": "bob", "password_hash": "h2"},
    ]
    data_file.write_text(json.dumps({"version": 1, "next_id": 3, "users": users}, separators=(",", ":")))

    assert json_store.find_by_username(tricky) == User(1, tricky, "h1")
    assert json_store.find_by_username("mallory") is None
    assert json_store.find_by_id(9) is None
    assert json_store.find_by_id(2) == User(2, "bob", "h2")


def test_many_registrations_by_another_worker_are_each_found(json_store, data_file):
    json_store.create_users_bulk((f"user{n}", HASH) for n in range(200))
    other_worker = JsonFileStore(data_file)
    assert other_worker.find_by_id(1) is not None

    for n in range(100):
        json_store.create_user(f"late{n}", HASH)
        assert other_worker.find_by_username(f"late{n}") == User(201 + n, f"late{n}", HASH)
    json_store.create_users_bulk((f"bulk{n}", HASH) for n in range(500))

    assert other_worker.find_by_id(800) == User(800, "bulk499", HASH)
    assert other_worker.find_by_id(801) is None
    assert all(other_worker.find_by_username(f"user{n}").id == n + 1 for n in range(200))
    assert other_worker.find_by_username("late") is None


class _NameHashedLike(str):
    """A name whose hash is another name's: what two different names with one hash look like to the index."""

    def __new__(cls, text: str, like: str) -> _NameHashedLike:
        name = super().__new__(cls, text)
        name.like = like
        return name

    def __hash__(self) -> int:
        return hash(self.like)


def test_a_name_with_the_hash_of_a_registered_name_finds_nobody(json_store):
    json_store.create_users_bulk([("alice", HASH), ("bob", HASH)])

    assert json_store.find_by_username(_NameHashedLike("mallory", like="alice")) is None
    assert json_store.find_by_username("alice") == User(1, "alice", HASH)

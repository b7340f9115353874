"""Password hashing, the persisted signing key, security headers, CORS and the absence of sessions."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from src import create_app, security
from src.config import ConfigError, Settings
from src.security import Passwords, load_or_create_secret_key, secret_key_path, signing_key
from src.storage import User
from tests.conftest import FAST_ARGON2, PASSWORD, SECURITY_HEADERS

FAST_SETTINGS = Settings(argon2_time_cost=2, argon2_memory_kib=19456, argon2_parallelism=1)


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(FAST_SETTINGS)


# ------------------------------------------------------------------------------------------------ passwords


def test_hash_is_argon2id_with_the_configured_cost(passwords):
    assert passwords.hash(PASSWORD).startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hashes_of_one_password_differ_by_their_salt(passwords):
    assert passwords.hash(PASSWORD) != passwords.hash(PASSWORD)


def test_verify_accepts_the_right_password(passwords):
    user = User(1, "alice", passwords.hash(PASSWORD))

    assert passwords.verify(user, PASSWORD) is True


def test_verify_refuses_a_wrong_password(passwords):
    user = User(1, "alice", passwords.hash(PASSWORD))

    assert passwords.verify(user, PASSWORD + "!") is False


def test_verify_refuses_an_unknown_user_even_with_the_dummy_password(passwords):
    assert passwords.verify(None, PASSWORD) is False


def test_the_dummy_hash_has_the_configured_cost_and_a_fresh_salt_and_digest(passwords):
    parts = passwords.dummy_hash.split("$")

    assert parts[:4] == ["", "argon2id", "v=19", "m=19456,t=2,p=1"]
    assert (len(parts[4]), len(parts[5])) == (22, 43)  # 16 and 32 bytes, unpadded base64
    assert Passwords(FAST_SETTINGS).dummy_hash != passwords.dummy_hash


def test_verify_refuses_a_corrupt_stored_hash(passwords):
    assert passwords.verify(User(1, "alice", "not-a-hash"), PASSWORD) is False


def test_verify_accepts_hashes_made_with_another_cost(passwords):
    stronger = Passwords(Settings(argon2_time_cost=3, argon2_memory_kib=19456 * 2, argon2_parallelism=2))

    assert passwords.verify(User(1, "alice", stronger.hash(PASSWORD)), PASSWORD) is True


# ------------------------------------------------------------------------------------------------ signing key


def test_generated_key_is_stored_beside_the_data_file_with_mode_0600(tmp_path):
    data_file = tmp_path / "var" / "data.json"

    key = load_or_create_secret_key(str(data_file))

    path = Path(secret_key_path(str(data_file)))
    assert path == tmp_path / "var" / "data.json.secret_key"
    assert path.read_text().strip() == key
    assert len(key.encode()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.json.secret_key"]


def test_generated_key_is_reused_on_the_next_start(tmp_path):
    first = load_or_create_secret_key(str(tmp_path / "data.json"))

    assert load_or_create_secret_key(str(tmp_path / "data.json")) == first


def test_generated_key_is_logged_once_as_a_warning_without_the_key(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="src.security"):
        key = load_or_create_secret_key(str(tmp_path / "data.json"))
        load_or_create_secret_key(str(tmp_path / "data.json"))

    warnings = [record for record in caplog.records if "SECRET_KEY is not set" in record.getMessage()]
    assert len(warnings) == 1
    assert key not in caplog.text


def _key_of_a_new_process(data_file: str, start, queue) -> None:
    start.wait()
    queue.put(load_or_create_secret_key(data_file))


def test_workers_starting_at_once_all_get_the_same_key(tmp_path):
    context = multiprocessing.get_context("fork")
    start, queue = context.Event(), context.Queue()
    data_file = str(tmp_path / "data.json")
    processes = [
        context.Process(target=_key_of_a_new_process, args=(data_file, start, queue)) for _ in range(8)
    ]
    for process in processes:
        process.start()
    start.set()
    keys = [queue.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    assert len(set(keys)) == 1
    assert Path(secret_key_path(data_file)).read_text().strip() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == ["data.json.secret_key"]


def test_a_worker_that_loses_the_race_reads_the_winners_key(tmp_path, monkeypatch, caplog):
    # The race cannot be scheduled between processes: another worker publishes its key right after this
    # one found no file, so this worker's link fails and it must adopt the other key.
    data_file = str(tmp_path / "data.json")
    real_read = security._read_secret_key
    winner: list[str] = []

    def read_while_another_worker_wins(path: str) -> str:
        monkeypatch.setattr(security, "_read_secret_key", real_read)
        winner.append(load_or_create_secret_key(data_file))
        raise FileNotFoundError(path)

    monkeypatch.setattr(security, "_read_secret_key", read_while_another_worker_wins)
    with caplog.at_level(logging.WARNING, logger="src.security"):
        key = load_or_create_secret_key(data_file)

    assert key == winner[0]
    assert caplog.text.count("SECRET_KEY is not set") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data.json.secret_key"]


def test_a_short_key_file_stops_startup_naming_secret_key(tmp_path):
    Path(secret_key_path(str(tmp_path / "data.json"))).write_text("short\n")

    with pytest.raises(ConfigError, match=r"^SECRET_KEY file .* shorter than 32 bytes"):
        load_or_create_secret_key(str(tmp_path / "data.json"))


def test_a_key_folder_that_is_a_file_stops_startup_naming_secret_key(tmp_path):
    (tmp_path / "not-a-folder").write_text("")

    with pytest.raises(ConfigError, match=r"^SECRET_KEY is unset and .* cannot be read: Not a directory"):
        load_or_create_secret_key(str(tmp_path / "not-a-folder" / "data.json"))


def test_a_key_folder_where_no_file_can_be_created_stops_startup_naming_secret_key():
    # /proc/self exists, yet no file can be created in it, not even by root.
    with pytest.raises(ConfigError, match=r"^SECRET_KEY is unset and a generated key cannot be stored"):
        load_or_create_secret_key("/proc/self/data.json")


def test_an_unreadable_key_path_stops_startup_naming_secret_key(tmp_path):
    Path(secret_key_path(str(tmp_path / "data.json"))).mkdir()

    with pytest.raises(ConfigError, match=r"^SECRET_KEY is unset and .* cannot be read"):
        load_or_create_secret_key(str(tmp_path / "data.json"))


def test_a_key_file_readable_by_others_is_warned_about(tmp_path, caplog):
    load_or_create_secret_key(str(tmp_path / "data.json"))
    os.chmod(secret_key_path(str(tmp_path / "data.json")), 0o644)

    with caplog.at_level(logging.WARNING, logger="src.security"):
        load_or_create_secret_key(str(tmp_path / "data.json"))

    assert "readable by others" in caplog.text


def test_secret_key_from_the_environment_is_used_and_nothing_is_written(tmp_path):
    settings = Settings(secret_key="s" * 40, data_file_path=str(tmp_path / "data.json"))

    assert signing_key(settings) == "s" * 40
    assert list(tmp_path.iterdir()) == []


def test_postgresql_without_secret_key_is_refused_even_from_hand_built_settings():
    with pytest.raises(ConfigError, match=r"^SECRET_KEY"):
        signing_key(Settings(database_url="postgresql://db/api"))


# ------------------------------------------------------------------------------------------------ app wiring


def fast_app(tmp_path, **variables: str):
    app = create_app({**FAST_ARGON2, "DATA_FILE_PATH": str(tmp_path / "data.json"), **variables})
    app.testing = True
    return app


def test_only_the_token_key_is_set_never_a_flask_session_key(tmp_path):
    app = fast_app(tmp_path)

    assert app.config["SECRET_KEY"] is None
    stored_key = Path(secret_key_path(str(tmp_path / "data.json"))).read_text().strip()
    assert app.extensions["access_tokens"].key == stored_key


def test_responses_never_set_a_cookie(tmp_path):
    client = fast_app(tmp_path).test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})

    response = client.post("/authenticate", json={"username": "alice", "password": PASSWORD})

    assert "Set-Cookie" not in response.headers


def test_security_headers_and_no_store_by_default(tmp_path):
    response = fast_app(tmp_path).test_client().get("/healthz")

    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert response.headers["Cache-Control"] == "no-store"


def test_cors_is_off_by_default(tmp_path):
    response = fast_app(tmp_path).test_client().get("/healthz", headers={"Origin": "https://app.example"})

    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allows_a_configured_origin(tmp_path):
    client = fast_app(tmp_path, CORS_ORIGINS="https://app.example").test_client()

    response = client.get("/healthz", headers={"Origin": "https://app.example"})

    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


def test_cors_ignores_an_origin_that_is_not_configured(tmp_path):
    client = fast_app(tmp_path, CORS_ORIGINS="https://app.example").test_client()

    for origin in ("https://evil.example", "https://app.example.evil.example", "http://app.example"):
        response = client.get("/healthz", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_preflight_allows_the_authorization_header(tmp_path):
    client = fast_app(tmp_path, CORS_ORIGINS="https://app.example").test_client()

    response = client.options(
        "/hello",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()


def test_a_hash_beyond_the_concurrency_bound_is_refused_at_once_with_retry_after_when_it_may_not_wait():
    import threading

    from src.config import Settings
    from src.errors import Overloaded
    from src.security import Passwords

    passwords = Passwords(
        Settings(
            argon2_time_cost=2,
            argon2_memory_kib=19456,
            argon2_parallelism=1,
            argon2_concurrency=1,
            argon2_wait_seconds=0.0,
        )
    )
    held, release = threading.Event(), threading.Event()

    def hold_the_only_slot() -> None:
        with passwords.slot():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_only_slot)
    holder.start()
    held.wait(10)
    try:
        with pytest.raises(Overloaded) as refused, passwords.slot():
            pass
    finally:
        release.set()
        holder.join(10)

    assert refused.value.status == 503
    assert refused.value.headers == (("Retry-After", "1"),)
    with passwords.slot():  # free again
        pass


def test_hashing_slots_are_handed_out_in_arrival_order():
    import threading

    from harness import wait_until
    from src.security import HashingSlots

    slots = HashingSlots(1, queue_length=8)
    assert slots.acquire(0)
    served: list[int] = []

    def wait_for_a_slot(number: int) -> None:
        assert slots.acquire(30)
        served.append(number)
        slots.release()

    waiters = []
    for number in range(5):
        waiter = threading.Thread(target=wait_for_a_slot, args=(number,))
        waiter.start()
        waiters.append(waiter)
        wait_until(lambda n=number: slots.waiting() == n + 1, timeout=10, interval=0.001, what="the queue")
    slots.release()
    for waiter in waiters:
        waiter.join(30)

    assert served == [0, 1, 2, 3, 4]
    assert slots.acquire(0)  # the last one gave the slot back


def test_a_freed_slot_goes_to_the_waiter_not_to_a_newcomer():
    import threading

    from harness import wait_until
    from src.security import HashingSlots

    slots = HashingSlots(1, queue_length=8)
    assert slots.acquire(0)
    got_it = threading.Event()

    def waiter() -> None:
        if slots.acquire(30):
            got_it.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: slots.waiting() == 1, timeout=10, interval=0.001, what="the waiter to queue")
    slots.release()
    newcomer = slots.acquire(0)
    thread.join(30)

    assert got_it.is_set()
    assert newcomer is False


def test_a_waiter_past_its_deadline_leaves_the_queue():
    from src.security import HashingSlots

    slots = HashingSlots(1, queue_length=8)
    assert slots.acquire(0)

    assert slots.acquire(0.01) is False
    assert slots.waiting() == 0
    slots.release()
    assert slots.acquire(0)


def test_beyond_the_queue_length_a_request_is_refused_without_waiting():
    import threading

    from harness import wait_until
    from src.security import HashingSlots

    slots = HashingSlots(1, queue_length=1)
    assert slots.acquire(0)
    answers: list[bool] = []

    def take_and_give_back() -> None:
        answers.append(slots.acquire(30))
        if answers[-1]:
            slots.release()

    waiter = threading.Thread(target=take_and_give_back)
    waiter.start()
    wait_until(lambda: slots.waiting() == 1, timeout=10, interval=0.001, what="the waiter to queue")
    newcomer = threading.Thread(target=take_and_give_back)
    newcomer.start()
    wait_until(
        lambda: not newcomer.is_alive() or slots.waiting() == 2, timeout=10, interval=0.001, what="an answer"
    )
    queued = slots.waiting()
    slots.release()
    for thread in (waiter, newcomer):
        thread.join(30)

    assert queued == 1
    assert sorted(answers) == [False, True]

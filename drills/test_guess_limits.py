"""Racing and distributed password guesses, against both stores.

20 concurrent wrong passwords for one (address, username) make at most AUTH_MAX_FAILURES password checks;
5 guesses from each of 10 addresses are cut short by the per-username bound, while the owner, from an
address that never failed, still signs in; /register is limited per address.
"""

from __future__ import annotations

import collections
import threading

import pytest
import requests

from harness.gunicorn import GunicornServer

from .conftest import PASSWORD, register

AUTH_MAX_FAILURES = 5
PER_USERNAME = 10
REGISTER_LIMIT = 10


@pytest.fixture(params=["json", "postgresql"])
def server(request, tmp_path):
    env = {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": None,
        "AUTH_MAX_FAILURES": str(AUTH_MAX_FAILURES),
        "AUTH_MAX_FAILURES_PER_USERNAME": str(PER_USERNAME),
        "REGISTER_MAX_PER_ADDRESS": str(REGISTER_LIMIT),
        # Room for every racing guess to reach the limit check at once (the shedding drill is the flood).
        "ARGON2_CONCURRENCY": "8",
        "TRUSTED_PROXY_COUNT": "1",
        "TRUSTED_PROXIES": "127.0.0.1",
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
    }
    if request.param == "postgresql":
        env |= {"DATABASE_URL": request.getfixturevalue("postgres_url"), "SECRET_KEY": "k" * 48}
    with GunicornServer(env, workers=4).start(timeout=60) as started:
        started.store = request.param
        yield started


def guess(url: str, address: str, password: str = "wrong password", username: str = "alice") -> int:
    return requests.post(
        f"{url}/authenticate",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
        timeout=60,
    ).status_code


def test_racing_guesses_never_pass_the_limit(server, results):
    assert register(server.url, "alice").status_code == 201
    barrier = threading.Barrier(20)
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def racer() -> None:
        barrier.wait(timeout=30)
        status = guess(server.url, "198.51.100.7")
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=racer) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    results[f"racing_guesses_{server.store}"] = {"concurrent_wrong_passwords": 20, "statuses": dict(statuses)}

    assert statuses[401] <= AUTH_MAX_FAILURES
    assert statuses[401] + statuses[429] == 20


def test_guesses_from_many_addresses_are_cut_short_and_the_owner_still_signs_in(server, results):
    assert register(server.url, "alice").status_code == 201
    statuses: collections.Counter[int] = collections.Counter()
    for address in range(10):
        for _ in range(5):
            statuses[guess(server.url, f"203.0.113.{address}")] += 1
    owner = guess(server.url, "192.0.2.1", password=PASSWORD)
    owner_again_after_one_miss = [
        guess(server.url, "192.0.2.2"),
        guess(server.url, "192.0.2.2", password=PASSWORD),
    ]
    results[f"distributed_guesses_{server.store}"] = {
        "guesses": "5 from each of 10 addresses",
        "statuses": dict(statuses),
        "owner_from_a_fresh_address": owner,
    }

    # PER_USERNAME failures, then one guess for each of the 8 addresses that had not failed yet.
    assert statuses[401] == PER_USERNAME + 8
    assert statuses[429] == 50 - PER_USERNAME - 8
    assert owner == 200
    assert owner_again_after_one_miss == [401, 429]


def test_registrations_are_limited_per_address(server, results):
    statuses = [
        requests.post(
            f"{server.url}/register",
            json={"username": f"user-{n}", "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.9"},
            timeout=30,
        ).status_code
        for n in range(REGISTER_LIMIT + 2)
    ]
    other_address = requests.post(
        f"{server.url}/register",
        json={"username": "user-other", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.10"},
        timeout=30,
    )
    results[f"registrations_per_address_{server.store}"] = {"statuses": statuses}

    assert statuses == [201] * REGISTER_LIMIT + [429, 429]
    assert other_address.status_code == 201

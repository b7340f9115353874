"""A burst of sign-ups larger than the hashing slots, and name probing past the registration limit.

200 sign-ups from 32 clients that honour Retry-After, at the production argon2 cost, on gunicorn.conf.py's
4 workers: each waits its turn for a hashing slot (ARGON2_WAIT_SECONDS), so every one ends in 201 while the
probes stay answered. Past REGISTER_MAX_PER_ADDRESS, a taken name and a free one get the same 429, so the
answers cannot list the names that exist.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
import requests

from harness.gunicorn import GunicornServer

from .conftest import PASSWORD, Prober

SIGN_UPS = 200
CLIENTS = 32
# A client gives up after this long; the drill then fails (every sign-up must end in 201).
CLIENT_DEADLINE_SECONDS = 120
REGISTER_LIMIT = 3


@pytest.fixture(params=["json", "postgresql"])
def start_server(request, tmp_path):
    """Factory: gunicorn.conf.py's 4 workers on one store, with ``settings`` over the drill's environment."""
    servers: list[GunicornServer] = []

    def start(**settings: str) -> GunicornServer:
        env = {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": None,
            "TRUSTED_PROXY_COUNT": "1",
            "TRUSTED_PROXIES": "127.0.0.1",
            **settings,
        }
        if request.param == "postgresql":
            env |= {"DATABASE_URL": request.getfixturevalue("postgres_url"), "SECRET_KEY": "k" * 48}
        server = GunicornServer(env, workers=4)
        servers.append(server)
        server.start(timeout=60)
        server.store = request.param
        return server

    yield start
    for server in servers:
        server.close()


def test_a_burst_of_sign_ups_honouring_retry_after_all_end_in_201(start_server, results):
    server = start_server(REGISTER_MAX_PER_ADDRESS="0")
    names = iter(range(SIGN_UPS))
    names_lock = threading.Lock()
    created: list[int] = []
    shed = collections.Counter()
    given_up: list[int] = []

    def client(number: int) -> None:
        headers = {"X-Forwarded-For": f"198.51.{number}.1"}
        with requests.Session() as session:
            while True:
                with names_lock:
                    name = next(names, None)
                if name is None:
                    return
                deadline = time.monotonic() + CLIENT_DEADLINE_SECONDS
                while time.monotonic() < deadline:
                    body = {"username": f"user-{name:03d}", "password": PASSWORD}
                    response = session.post(f"{server.url}/register", json=body, headers=headers, timeout=90)
                    if response.status_code != 503:
                        created.append(response.status_code)
                        break
                    shed[number] += 1
                    time.sleep(int(response.headers["Retry-After"]))  # what the answer asks of a client
                else:
                    given_up.append(name)

    prober = Prober(f"{server.url}/healthz")
    prober.start()
    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=CLIENT_DEADLINE_SECONDS * 2)
    seconds = round(time.monotonic() - started, 1)
    prober.stop()
    results[f"sign_up_burst_{server.store}"] = {
        "sign_ups": SIGN_UPS,
        "clients": CLIENTS,
        "seconds": seconds,
        "answers_503": sum(shed.values()),
        "healthz": prober.figures(),
    }

    assert given_up == []
    assert created == [201] * SIGN_UPS
    assert prober.failures == []


def test_past_the_registration_limit_taken_and_free_names_get_the_same_429(start_server, results):
    server = start_server(
        REGISTER_MAX_PER_ADDRESS=str(REGISTER_LIMIT), ARGON2_TIME_COST="2", ARGON2_MEMORY_KIB="19456"
    )
    owner = {"X-Forwarded-For": "203.0.113.1"}
    prober = {"X-Forwarded-For": "203.0.113.2"}
    taken = {"username": "alice", "password": PASSWORD}
    assert requests.post(f"{server.url}/register", json=taken, headers=owner, timeout=30).status_code == 201

    answers = []
    for attempt in range(REGISTER_LIMIT + 50):
        body = taken if attempt % 2 else {"username": f"free-{attempt}", "password": PASSWORD}
        response = requests.post(f"{server.url}/register", json=body, headers=prober, timeout=30)
        answers.append((body is taken, response.status_code, response.json().get("detail")))
    past_the_limit = answers[REGISTER_LIMIT:]
    results[f"register_enumeration_{server.store}"] = {
        "attempts": len(answers),
        "statuses_past_the_limit": dict(collections.Counter(status for _, status, _ in past_the_limit)),
    }

    assert [status for _, status, _ in answers[:REGISTER_LIMIT]] == [201, 409, 201]
    assert {(status, detail) for _, status, detail in past_the_limit} == {
        (429, "Too many registrations from this address; try again later.")
    }

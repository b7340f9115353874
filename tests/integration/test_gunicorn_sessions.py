"""Sessions under a real ``gunicorn -w 4``, with both stores: an ended session is refused by every worker at
once, concurrent refreshes of one token let exactly one through, and a logout racing /hello calls never lets
a call that starts after its 204 succeed. Requests go to 127.0.0.1 only, in bounded numbers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import wait_until
from harness.gunicorn import GunicornServer

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
ESTABLISHED = "01"


@pytest.fixture
def server(store_env: dict[str, str | None], gunicorn_server) -> GunicornServer:
    """The production worker model (src/worker.py), 4 workers."""
    return gunicorn_server(store_env, workers=4)


def login(url: str, username: str) -> dict:
    body = {"username": username, "password": PASSWORD}
    assert requests.post(f"{url}/register", json=body, timeout=60).status_code == 201
    response = requests.post(f"{url}/authenticate", json=body, timeout=60)
    assert response.status_code == 200
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------- every worker


def _client_sockets(port: int) -> set[str]:
    """Server-side sockets of established connections to ``port`` ("socket:[inode]")."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == ESTABLISHED:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _workers_holding_clients(server: GunicornServer) -> dict[int, int]:
    """How many client connections each worker holds (accepted, being read)."""
    clients = _client_sockets(server.port)
    held = {}
    for pid in server.worker_pids():
        sockets = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                sockets.add(os.readlink(fd))
            except OSError:
                continue  # closed meanwhile
        held[pid] = len(sockets & clients)
    return held


def hello_on_every_worker(server: GunicornServer, token: str) -> list[int]:
    """Statuses of GET /hello sent at once on connections held by every worker.

    Each connection sends its request but the blank line that ends the headers; once every worker holds at
    least one of them (seen in /proc), all requests are completed together, so every worker answers one.
    The server runs sync workers (GUNICORN_THREADS=1), which hold one connection each, so that N held
    connections are N workers; a threaded worker may accept every connection itself.
    """
    partial = (
        f"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
    )
    connections: list[socket.socket] = []
    try:
        while True:
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            connections.append(connection)
            connection.sendall(partial.encode())
            wait_until(
                lambda: sum(_workers_holding_clients(server).values()) >= len(connections),
                timeout=10,
                interval=0.01,
                what="the workers to accept the connection",
            )
            if all(_workers_holding_clients(server).values()):
                break
            assert len(connections) < 64, "the connections never reached every worker"
        for connection in connections:
            connection.sendall(b"\r\n")
        return [int(_read_all(connection).split(b" ", 2)[1]) for connection in connections]
    finally:
        for connection in connections:
            connection.close()


def _read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_every_worker_refuses_an_ended_session_at_once(store_env, gunicorn_server):
    server = gunicorn_server({**store_env, "GUNICORN_THREADS": "1"}, workers=4)
    url = server.url
    alice, bob, carol = login(url, "alice"), login(url, "bob"), login(url, "carol")
    for session in (alice, bob, carol):
        assert set(hello_on_every_worker(server, session["access_token"])) == {200}

    # Logout: the 204 is the moment from which no worker accepts the session.
    assert (
        requests.post(f"{url}/logout", headers=bearer(alice["access_token"]), timeout=30).status_code == 204
    )
    assert set(hello_on_every_worker(server, alice["access_token"])) == {401}

    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = requests.put(
        f"{url}/users/me/password", json=change, headers=bearer(bob["access_token"]), timeout=60
    )
    assert response.status_code == 204
    assert set(hello_on_every_worker(server, bob["access_token"])) == {401}

    response = requests.delete(
        f"{url}/users/me", json={"password": PASSWORD}, headers=bearer(carol["access_token"]), timeout=60
    )
    assert response.status_code == 204
    assert set(hello_on_every_worker(server, carol["access_token"])) == {401}

    for session in (alice, bob, carol):
        refresh = {"refresh_token": session["refresh_token"]}
        assert requests.post(f"{url}/token/refresh", json=refresh, timeout=30).status_code == 401


# ---------------------------------------------------------------------------------------------------- races


def test_twenty_concurrent_refreshes_of_one_token_give_exactly_one_200(server):
    session = login(server.url, "alice")
    start = threading.Barrier(20)
    answers: list[requests.Response] = []

    def refresh() -> None:
        start.wait()
        answers.append(
            requests.post(
                f"{server.url}/token/refresh", json={"refresh_token": session["refresh_token"]}, timeout=60
            )
        )

    threads = [threading.Thread(target=refresh) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(answer.status_code for answer in answers) == [200] + [401] * 19
    # The losers presented a spent token: by design that ends the session, the winner's new tokens included.
    winner = next(answer.json() for answer in answers if answer.status_code == 200)
    hello = requests.get(f"{server.url}/hello", headers=bearer(winner["access_token"]), timeout=30)
    assert hello.status_code == 401


def test_no_hello_that_starts_after_the_logout_204_succeeds(server):
    session = login(server.url, "alice")
    results: list[tuple[float, int]] = []  # (started, status)
    logged_out_at: list[float] = []
    lock = threading.Lock()

    def call_hello() -> None:
        with requests.Session() as client:
            for _ in range(40):  # bounded; stops early once enough calls ran after the logout
                started = time.monotonic()
                status = client.get(
                    f"{server.url}/hello", headers=bearer(session["access_token"]), timeout=30
                )
                with lock:
                    results.append((started, status.status_code))
                    after = [s for s, _ in results if logged_out_at and s > logged_out_at[0]]
                if len(after) >= 60:
                    return

    threads = [threading.Thread(target=call_hello) for _ in range(20)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(results) >= 20, timeout=30, interval=0.01, what="the /hello calls to start")
    response = requests.post(f"{server.url}/logout", headers=bearer(session["access_token"]), timeout=30)
    logged_out_at.append(time.monotonic())
    for thread in threads:
        thread.join(timeout=120)

    assert response.status_code == 204
    before = [status for started, status in results if started < logged_out_at[0]]
    after = [status for started, status in results if started > logged_out_at[0]]
    assert 200 in before
    assert len(after) >= 20
    assert set(after) == {401}


# ------------------------------------------------------------------------------------------------ bad input


def test_a_lone_surrogate_in_a_password_to_check_returns_400_not_500(server):
    """The JSON escape "\\ud800" decodes to text UTF-8 cannot encode: refused as login refuses it."""
    token = login(server.url, "alice")["access_token"]
    headers = {**bearer(token), "Content-Type": "application/json"}
    change = b'{"current_password": "abcdefgh\\ud800", "new_password": "a brand new passphrase"}'

    changed = requests.put(f"{server.url}/users/me/password", data=change, headers=headers, timeout=60)
    deleted = requests.delete(
        f"{server.url}/users/me", data=b'{"password": "abcdefgh\\ud800"}', headers=headers, timeout=60
    )

    for response in (changed, deleted):
        assert response.status_code == 400
        assert response.headers["Content-Type"] == "application/problem+json"
    assert requests.get(f"{server.url}/hello", headers=bearer(token), timeout=30).status_code == 200


# --------------------------------------------------------------------------------------------- revocation


def _request(port: int, request: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(request)
    return connection


def _status(connection: socket.socket) -> int:
    with connection:
        return int(_read_all(connection).split(b" ", 2)[1])


@pytest.mark.parametrize("store_env", ["postgresql"], indirect=True)
def test_right_after_the_logout_204_every_worker_refuses_the_token(server):
    """Rounds of: sign in, use the token on 8 keep-alive connections (spread over the 4 workers, each of which
    then knows the session), log out, and the moment the 204 is read send GET /users/me with the old token
    on all 8 at once: every answer is 401."""
    credentials = {"username": "alice", "password": PASSWORD}
    assert requests.post(f"{server.url}/register", json=credentials, timeout=60).status_code == 201
    used: list[int] = []
    after_logout: list[int] = []
    for _ in range(40):
        signed_in = requests.post(f"{server.url}/authenticate", json=credentials, timeout=60)
        auth = f"Authorization: Bearer {signed_in.json()['access_token']}\r\n".encode()
        me = b"GET /users/me HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
        connections = [_request(server.port, me + b"\r\n") for _ in range(8)]
        used.extend(_keep_alive_status(connection) for connection in connections)
        logout = b"POST /logout HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"Content-Length: 0\r\n"
        assert _status(_request(server.port, logout + b"Connection: close\r\n\r\n")) == 204
        for connection in connections:
            connection.sendall(me + b"Connection: close\r\n\r\n")
        after_logout.extend(_status(connection) for connection in connections)

    assert used == [200] * 320
    assert after_logout == [401] * 320


def _keep_alive_status(connection: socket.socket) -> int:
    """The status of one response on a kept-alive connection (its body read to its Content-Length)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed before a whole response"
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split(b" ", 2)[1])

"""The worker (src/worker.py) under a real gunicorn: what reaches the application, and what never does.

Raw sockets on 127.0.0.1, so that the bytes on the wire are the test's own: bodies over the limit, a body
sent in chunks, keep-alive, headers the WSGI mapping would confuse. That probes stay answered while the
workers hash passwords is the login-flood drill's (drills/test_login_flood.py).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

PASSWORD = "correct horse battery"
MAX_CONTENT_LENGTH = 4096


@pytest.fixture
def server(gunicorn_server, tmp_path: Path):
    """One worker, so that every request of a test meets the same event loop."""
    return gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "MAX_CONTENT_LENGTH": str(MAX_CONTENT_LENGTH),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
            "REGISTER_MAX_PER_ADDRESS": "0",
        },
        workers=1,
    )


def exchange(port: int, raw: bytes, *, timeout: float = 10) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(raw)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server):
    # The client announces 10 MB and sends nothing more: the answer comes anyway, so the worker never
    # waited for (nor buffered) the body.
    head = (
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    response = exchange(server.port, head)

    assert status_of(response) == 413
    assert b"application/problem+json" in response


def test_a_chunked_body_over_the_limit_is_413_and_the_connection_closes(server):
    chunk = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8))  # 8 KiB, limit 4 KiB
    raw = (
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    response = exchange(server.port, raw)

    assert status_of(response) == 413
    assert response.count(b"HTTP/1.1 ") == 1


def test_a_chunked_body_within_the_limit_reaches_the_route_whole(server):
    body = json.dumps({"username": "chunky", "password": PASSWORD}).encode()
    pieces = [body[:7], body[7:20], body[20:]]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    raw = (
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    response = exchange(server.port, raw)

    assert status_of(response) == 201
    assert body_of(response) == {"id": 1, "username": "chunky"}


def test_keep_alive_serves_pipelined_requests_in_order_with_their_ids(server):
    raw = b"".join(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-ID: pipelined-%d\r\n%s\r\n"
        % (number, b"Connection: close\r\n" if number == 3 else b"")
        for number in (1, 2, 3)
    )
    response = exchange(server.port, raw)

    assert response.count(b"HTTP/1.1 200 OK") == 3
    ids = [line for line in response.split(b"\r\n") if line.lower().startswith(b"x-request-id:")]
    assert [line.split(b":", 1)[1].strip() for line in ids] == [
        b"pipelined-1",
        b"pipelined-2",
        b"pipelined-3",
    ]


def test_a_header_spelled_with_underscores_never_passes_for_its_dashed_twin(gunicorn_server, tmp_path):
    # "X_Request_ID" and "X-Request-ID" are one key in the WSGI environ: the underscore spelling is dropped,
    # so it can neither set the id nor (behind a proxy that checks only the dashed one) spoof a header.
    # The worker's connections (src/http1.py) parse the request themselves: they must drop it.
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=1,
    )
    raw = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX_Request_ID: spoofed-id\r\nConnection: close\r\n\r\n"
    response = exchange(server.port, raw)

    assert status_of(response) == 200
    assert b"spoofed-id" not in response


def test_percent_encoded_path_reaches_its_route(server):
    response = exchange(server.port, b"GET /health%7A HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

    assert status_of(response) == 200
    assert body_of(response) == {"status": "ok"}


# Requests a proxy and the worker could frame differently (request smuggling) or that break the grammar:
# each is refused and its connection closed, so nothing after it is read as a request: llhttp through the
# worker's connections (src/http1.py), under a real gunicorn.
HOSTILE = {
    "Content-Length with Transfer-Encoding": (
        b"POST /authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    ),
    "two different Content-Lengths": (
        b"POST /authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        400,
    ),
    "Transfer-Encoding chunked twice": (
        b"POST /authenticate HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunked body in HTTP/1.0": (
        b"POST /authenticate HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunk size that is not hexadecimal": (
        b"POST /authenticate HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "negative Content-Length": (b"POST /authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    "signed Content-Length": (
        b"POST /authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\nabcd",
        400,
    ),
    "space before the colon": (b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length : 0\r\n\r\n", 400),
    "obsolete line folding": (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
    "bare LF line endings": (b"GET /healthz HTTP/1.1\nHost: t\n\n", 400),
    "NUL in a header value": (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
    "header line over 8,190 bytes": (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_an_ambiguous_or_malformed_request_is_refused_and_its_connection_closed(server, case):
    raw, status = HOSTILE[case]

    response = exchange(server.port, raw, timeout=5)  # reads until the server closes

    assert response.count(b"HTTP/1.1 ") == 1
    assert status_of(response) == status


# ---------------------------------------------------------------------------------------------------------
# Where a request runs: every spelling of a hashing route on the pool
# ---------------------------------------------------------------------------------------------------------

# Hashes of about a second each: one run on the event loop holds every probe of the worker that long.
SLOW_HASH = {"ARGON2_TIME_COST": "60", "ARGON2_MEMORY_KIB": "19456", "ARGON2_CONCURRENCY": "8"}


def probe_while(port: int, busy: threading.Event) -> list[str]:
    """GET /healthz on a new connection every 0.1 s while ``busy`` is set; the failed probes."""
    failures: list[str] = []
    while busy.is_set():
        started = time.monotonic()
        try:
            status = status_of(
                exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=2)
            )
            if status != 200:
                failures.append(f"HTTP {status}")
        except OSError as exc:
            failures.append(type(exc).__name__)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    return failures


def test_probes_stay_answered_while_clients_hash_through_doubled_slashes(gunicorn_server, tmp_path):
    # Werkzeug matches //authenticate and //register to their routes: they hash there, and must do it on the
    # thread pool like their plain spellings, or the loop (and every probe of the worker) waits for argon2.
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
            "REGISTER_MAX_PER_ADDRESS": "0",
            **SLOW_HASH,
        },
        workers=1,
    )
    credentials = {"username": "alice", "password": PASSWORD}
    assert requests.post(f"{server.url}/register", json=credentials, timeout=60).status_code == 201

    def client(number: int) -> int:
        if number % 2:
            return requests.post(f"{server.url}//authenticate", json=credentials, timeout=60).status_code
        user = {"username": f"user{number}", "password": PASSWORD}
        return requests.post(f"{server.url}//register", json=user, timeout=60).status_code

    busy = threading.Event()
    busy.set()
    with ThreadPoolExecutor(max_workers=9) as pool:
        probes = pool.submit(probe_while, server.port, busy)
        statuses = sorted(pool.map(client, range(8)))
        busy.clear()
        failures = probes.result()

    assert statuses == [200] * 4 + [201] * 4  # the doubled slashes reached the hashing routes
    assert failures == []


# ---------------------------------------------------------------------------------------------------------
# Connections: at most worker_connections, a header timeout, closed at once on SIGTERM when idle
# ---------------------------------------------------------------------------------------------------------

HEADER_TIMEOUT = 2


@pytest.fixture
def bounded(gunicorn_server, tmp_path: Path):
    """One worker holding at most 20 connections, with a 2 s header timeout and a long keep-alive."""
    return gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
            "GUNICORN_WORKER_CONNECTIONS": "20",
            "GUNICORN_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "GUNICORN_KEEPALIVE": "60",  # so that only the header timeout can close an idle connection
        },
        workers=1,
    )


@pytest.fixture
def clients():
    """Open client sockets: ``clients(port)`` connects one; every one is closed at teardown."""
    opened: list[socket.socket] = []

    def connect(port: int) -> socket.socket:
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        return opened[-1]

    yield connect
    for sock in opened:
        sock.close()


def silent_connections(clients, port: int, count: int) -> list[tuple[socket.socket, float]]:
    """``count`` connections that never send a byte, each with the time it was opened."""
    return [(clients(port), time.monotonic()) for _ in range(count)]


def seconds_until_closed(sock: socket.socket, opened: float, limit: float) -> float:
    """Seconds from ``opened`` until the server closed ``sock`` (reads nothing else); ``limit`` at most."""
    sock.settimeout(max(0.001, opened + limit - time.monotonic()))
    try:
        data = sock.recv(1)
    except TimeoutError:
        return limit
    except ConnectionResetError:
        data = b""
    assert data == b""
    return time.monotonic() - opened


def test_a_worker_holds_at_most_worker_connections_and_still_answers_probes(bounded, clients):
    silent_connections(clients, bounded.port, 50)
    bounded.wait_until_workers_hold(20)
    held = []
    probes = []
    for _ in range(10):
        held.append(sum(bounded.held_connections().values()))
        probe = exchange(
            bounded.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=2
        )
        probes.append(status_of(probe))

    assert max(held) <= 20
    assert probes == [200] * 10


def test_a_silent_connection_is_closed_after_the_header_timeout(bounded, clients):
    connections = silent_connections(clients, bounded.port, 10)

    lifetimes = [seconds_until_closed(sock, opened, HEADER_TIMEOUT + 5) for sock, opened in connections]

    assert max(lifetimes) <= HEADER_TIMEOUT + 2
    assert min(lifetimes) >= HEADER_TIMEOUT - 0.5  # closed for its silence, not at once


def test_a_kept_alive_connection_sending_half_a_head_is_closed_after_the_header_timeout(bounded, clients):
    sock = clients(bounded.port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # never finished
    started = time.monotonic()

    assert seconds_until_closed(sock, started, HEADER_TIMEOUT + 5) <= HEADER_TIMEOUT + 2


def test_the_header_timeout_never_cuts_a_request_whose_head_has_come(bounded, clients):
    sock = clients(bounded.port)
    body = json.dumps({"username": "patient", "password": PASSWORD}).encode()
    sock.sendall(
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
    )
    # Past the header timeout with the body still coming: the request is in hand, not waiting for a head.
    assert seconds_until_closed(sock, time.monotonic(), HEADER_TIMEOUT + 1) == HEADER_TIMEOUT + 1
    sock.settimeout(10)
    sock.sendall(body[10:])
    response = b""
    while chunk := sock.recv(65536):
        response += chunk

    assert status_of(response) == 201


def test_sigterm_with_100_idle_connections_stops_the_master_within_3_seconds(
    gunicorn_server, tmp_path, clients
):
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=2,
    )
    silent_connections(clients, server.port, 100)
    server.wait_until_workers_hold(100)

    started = time.monotonic()
    exit_code = server.stop(timeout=30)
    stopped_after = time.monotonic() - started

    assert exit_code == 0
    assert stopped_after <= 3


def test_during_a_drain_idle_connections_close_at_once_and_a_request_in_hand_says_connection_close(
    server, clients
):
    idle = clients(server.port)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    busy = clients(server.port)
    busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert busy.recv(65536).startswith(b"HTTP/1.1 200")
    body = json.dumps({"username": "drained", "password": PASSWORD}).encode()
    # A request in hand when the signal comes: its head is read, half its body is still to come.
    busy.sendall(
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
    )
    server.wait_until_workers_hold(2)

    server.begin_graceful_stop()
    idle_closed_after = seconds_until_closed(idle, time.monotonic(), 5)
    busy.sendall(body[10:])
    response = b""
    while chunk := busy.recv(65536):
        response += chunk

    assert idle_closed_after < 1
    assert status_of(response) == 201
    assert b"\r\nConnection: close\r\n" in response.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert server.stop(timeout=30) == 0


def test_out_of_descriptors_is_logged_once_and_probes_stay_answered(gunicorn_server, tmp_path, clients):
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "METRICS_PORT": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=1,
    )
    # The limit drops under the running worker, below what it took at start: accept() meets EMFILE.
    (worker,) = server.worker_pids()
    in_use = len(os.listdir(f"/proc/{worker}/fd"))
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (in_use + 10, in_use + 10))
    silent_connections(clients, server.port, 50)

    probes = [
        status_of(
            exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=2)
        )
        for _ in range(10)
    ]

    assert probes == [200] * 10
    assert server.output().count("accept() failed") == 1
    assert "EMFILE" in server.output()

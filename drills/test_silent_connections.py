"""Silent connections: 6,000 connections that never send a byte, at 4 workers under a 1,024-descriptor limit.

Each worker holds at most ``worker_connections`` (lowered to what 1,024 descriptors leave), a new connection
takes the slot of the one that has waited longest, and a connection still silent after the header timeout
is closed: no connection lives longer than ``GUNICORN_HEADER_TIMEOUT`` + 2 s, and no probe fails.
"""

from __future__ import annotations

import resource
import selectors
import socket
import sys
import time

from harness.gunicorn import GunicornServer

from .conftest import Prober

SILENT = 6000
DESCRIPTORS = 1024
WORKERS = 4
WORKER_CONNECTIONS = 1000  # gunicorn.conf.py's default
HEADER_TIMEOUT = 10  # gunicorn.conf.py's default
# Applied by the master to itself before gunicorn starts: every worker it forks inherits it.
_LIMITED = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class LimitedServer(GunicornServer):
    """gunicorn under ``ulimit -n DESCRIPTORS``."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", _LIMITED.format(n=DESCRIPTORS), *super().command()]


def open_silent(port: int, count: int) -> dict[socket.socket, float]:
    """Open ``count`` connections as fast as the backlog takes them; each with the time it was opened."""
    opened: dict[socket.socket, float] = {}
    for _ in range(count):
        try:
            opened[socket.create_connection(("127.0.0.1", port), timeout=5)] = time.monotonic()
        except OSError:
            continue  # the backlog was full for 5 s: counted as not opened
    return opened


def lifetimes_until_closed(opened: dict[socket.socket, float], server: LimitedServer, seconds: float):
    """Wait until the server has closed every connection (``seconds`` at most): their lifetimes, and the most
    connections any worker held meanwhile."""
    lifetimes: list[float] = []
    most_held = 0
    deadline = time.monotonic() + seconds
    next_count = 0.0
    with selectors.DefaultSelector() as selector:
        for sock in opened:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while selector.get_map() and time.monotonic() < deadline:
            for key, _events in selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    data = sock.recv(1)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                assert data == b"", "a silent connection got an answer"
                lifetimes.append(time.monotonic() - opened[sock])
                selector.unregister(sock)
                sock.close()
            if time.monotonic() >= next_count:
                most_held = max([most_held, *server.held_connections().values()])
                next_count = time.monotonic() + 0.5
        still_open = len(selector.get_map())
        for key in list(selector.get_map().values()):
            key.fileobj.close()
    return lifetimes, most_held, still_open


def test_silent_connections_never_outlive_the_header_timeout_nor_take_the_probes(tmp_path, results):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SILENT + 256
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"the drill needs ulimit -Hn of {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    server = LimitedServer(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "LOG_LEVEL": "info",
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=WORKERS,
    )
    with server.start():
        probe = Prober(f"{server.url}/healthz", interval=0.25, timeout=2.0)
        probe.start()
        started = time.monotonic()
        opened = open_silent(server.port, SILENT)
        opening_seconds = time.monotonic() - started
        lifetimes, most_held, still_open = lifetimes_until_closed(opened, server, HEADER_TIMEOUT + 10)
        probe.stop()
        lowered = server.output().count("worker_connections lowered")
    figures = {
        "attack": f"{SILENT:,} connections that never send a byte, ulimit -n {DESCRIPTORS}",
        "path": f"no proxy -> gunicorn, {WORKERS} event-loop workers",
        "opened": len(opened),
        "opening_seconds": round(opening_seconds, 1),
        "longest_lifetime_s": round(max(lifetimes), 1),
        "closed_within_1_s": sum(1 for lifetime in lifetimes if lifetime < 1),
        "still_open": still_open,
        "most_held_by_a_worker": most_held,
        "healthz_app_port": probe.figures(),
    }
    results["silent_connections"] = figures

    assert len(opened) == SILENT
    assert still_open == 0
    assert max(lifetimes) <= HEADER_TIMEOUT + 2
    assert most_held <= WORKER_CONNECTIONS
    assert lowered == WORKERS  # each worker kept fewer than 1,000, for its 1,024 descriptors
    assert probe.failures == []

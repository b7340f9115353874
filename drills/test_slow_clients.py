"""Slow clients: 64 connections sending one header line every 3 s and 16 sending a body one byte every 3 s.

Through the committed nginx config (Debian's nginx) no probe may fail, on the app port or through the proxy.
Straight at gunicorn no probe may fail either: each worker's event loop (src/worker.py) holds a slow
connection as a coroutine, never a thread. The before variants aim the same connections at gunicorn's own
sync and gthread workers, which a few dozen slow connections take out.
"""

from __future__ import annotations

import socket
import time

import pytest

from harness.gunicorn import GunicornServer
from harness.nginx import NginxProxy

from .conftest import Prober, run_before_variants

SLOW_HEADERS = 64
SLOW_BODIES = 16
DRIP_SECONDS = 3.0
ATTACK_SECONDS = 24


class SlowClients:
    """Connections to ``port`` that each send a little every DRIP_SECONDS, reconnecting when dropped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[tuple[str, socket.socket | None]] = [("header", None)] * SLOW_HEADERS + [
            ("body", None)
        ] * SLOW_BODIES
        self.reconnects = 0

    def _open(self, kind: str) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            if kind == "header":
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: drill\r\n")
            else:
                sock.sendall(
                    b"POST /register HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{"
                )
        except OSError:
            return None
        return sock

    @staticmethod
    def _drip(kind: str, sock: socket.socket) -> bool:
        """Send the next little piece; False when the server has closed the connection."""
        try:
            sock.sendall(b"X-Drip: 1\r\n" if kind == "header" else b" ")
        except OSError:
            return False
        return True

    def run(self, seconds: float) -> None:
        """Keep every connection dripping for ``seconds``, then close them all."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                for index, (kind, sock) in enumerate(self.sockets):
                    if sock is not None and self._drip(kind, sock):
                        continue
                    if sock is not None:
                        sock.close()
                        self.reconnects += 1
                    self.sockets[index] = (kind, self._open(kind))
                time.sleep(min(DRIP_SECONDS, max(0.0, deadline - time.monotonic())))
        finally:
            for _kind, sock in self.sockets:
                if sock is not None:
                    sock.close()


def attack(port: int, probe_urls: dict[str, str]) -> dict[str, object]:
    probes = {name: Prober(url, interval=0.5) for name, url in probe_urls.items()}
    for probe in probes.values():
        probe.start()
    clients = SlowClients(port)
    clients.run(ATTACK_SECONDS)
    for probe in probes.values():
        probe.stop()
    return {name: probe.figures() for name, probe in probes.items()} | {"reconnects": clients.reconnects}


def server(tmp_path) -> GunicornServer:
    return GunicornServer(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": None,
        },
        workers=4,
    )


def test_slow_clients_through_the_proxy_never_reach_the_workers(tmp_path, results):
    with server(tmp_path).start() as app, NginxProxy(f"127.0.0.1:{app.port}").start() as proxy:
        figures = attack(
            proxy.port, {"healthz_app_port": f"{app.url}/healthz", "healthz_proxy": f"{proxy.url}/healthz"}
        )
    results["slow_clients"] = {
        "attack": f"{SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections for {ATTACK_SECONDS} s",
        "path": "nginx (deploy/nginx) -> gunicorn, 4 event-loop workers",
        **figures,
    }

    assert figures["healthz_app_port"]["failed"] == 0
    assert figures["healthz_proxy"]["failed"] == 0


def test_slow_clients_straight_at_the_event_loop_workers_never_hold_them(tmp_path, results):
    with server(tmp_path).start() as app:
        figures = attack(app.port, {"healthz_app_port": f"{app.url}/healthz"})
    results["slow_clients_no_proxy"] = {
        "attack": f"{SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections for {ATTACK_SECONDS} s",
        "path": "no proxy -> gunicorn, 4 event-loop workers",
        **figures,
    }

    assert figures["healthz_app_port"]["failed"] == 0
    assert figures["healthz_app_port"]["probes"] >= 40  # a probe every 0.5 s for 24 s


@pytest.mark.skipif(not run_before_variants(), reason="DRILLS_BEFORE=1 runs the before variants")
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_slow_clients_straight_at_gunicorn_before(tmp_path, results, worker_class):
    app = server(tmp_path)
    app.env["GUNICORN_THREADS"] = "1" if worker_class == "sync" else "8"
    if worker_class == "gthread":
        app.extra_args = ("-k", "gthread")
    with app.start():
        figures = attack(app.port, {"healthz_app_port": f"{app.url}/healthz"})
    model = "4 sync workers" if worker_class == "sync" else "4x8 gthread"
    results[f"slow_clients_before_{worker_class}"] = {
        "attack": f"{SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections for {ATTACK_SECONDS} s",
        "path": f"no proxy -> gunicorn {model}",
        **figures,
    }

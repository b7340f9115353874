"""A connection of the worker (src/http1.py) driven in-process: bytes in, bytes out, no socket.

``Session`` holds one ``Connection`` on an event loop of its own, with a transport that records what is
written and whether it was closed, and a worker with gunicorn's attributes the connection reads (``alive``,
``nr``, ``max_requests``, ``log``). Tests use it for what the wire carries; bench/profile.py for the CPU
cost of a request through the connection. The same connection under a real gunicorn is
tests/integration/test_worker.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from src.http1 import Application, Connection, HeadLimits

# gunicorn's defaults: limit_request_line, limit_request_fields, limit_request_field_size.
GUNICORN_LIMITS = HeadLimits(request_line=4094, fields=100, field_size=8190)


class Transport(asyncio.Transport):
    """Records the bytes written, the pauses, the half-close and the close."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        super().__init__()
        self.extra = {"peername": peer, "sockname": local}
        self.written = bytearray()
        self.closed = False
        self.eof_written = False
        self.reading_paused = False
        # Called after each write (Session.repeat waits on it), and at the close.
        self.on_write: Callable[[], None] = lambda: None
        self.on_close: Callable[[], None] = lambda: None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"  # noqa: S101 - a fault of the connection under test
        assert not self.eof_written, "written after the half-close"  # noqa: S101
        self.written += data
        self.on_write()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_close()

    @property
    def ended(self) -> bool:
        """The client has seen the end of the stream: closed, or half-closed (lingering)."""
        return self.closed or self.eof_written

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


class Worker:
    """gunicorn's worker as a connection sees it."""

    def __init__(self, max_requests: int = sys.maxsize) -> None:
        self.alive = True
        self.nr = 0
        self.max_requests = max_requests
        self.log = logging.getLogger("harness.http1")


class Table:
    """The worker's connection table as a connection sees it: the calls, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def opened(self, connection: Any) -> None:
        self.calls.append("opened")

    def began(self, connection: Any) -> None:
        self.calls.append("began")

    def request_started(self, connection: Any) -> None:
        self.calls.append("request_started")

    def request_finished(self, connection: Any) -> None:
        self.calls.append("request_finished")

    def lost(self, connection: Any) -> None:
        self.calls.append("lost")


class Session:
    """One connection on its own event loop: ``send`` bytes, read ``written``; ``close()`` at the end."""

    def __init__(
        self,
        application: Application,
        *,
        limits: HeadLimits = GUNICORN_LIMITS,
        keepalive: bool = True,
        scheme: str = "http",
        worker: Worker | None = None,
        peer: tuple[str, int] = ("192.0.2.7", 40123),
        local: tuple[str, int] = ("10.0.0.5", 8888),
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = worker or Worker()
        self.table = Table()
        self.transport = Transport(peer, local)
        self.connection = Connection(
            application, self.table, limits, worker=self.worker, keepalive=keepalive, scheme=scheme
        )
        self.connection.connection_made(self.transport)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)

    def send(self, *chunks: bytes) -> bytes:
        """Feed ``chunks`` one read each, let the loop run until nothing is being answered; all written."""
        for chunk in chunks:
            self.loop.call_soon(self.connection.data_received, chunk)
            self.loop.run_until_complete(self.settled())
        return self.written

    def repeat(self, raw: bytes, count: int) -> None:
        """Send ``raw`` ``count`` times, each once the answer to the one before is out (bench/profile.py)."""

        async def one_by_one() -> None:
            for _ in range(count):
                written = self.loop.create_future()
                self.transport.on_write = lambda written=written: written.done() or written.set_result(None)
                self.connection.data_received(raw)
                await written

        self.loop.run_until_complete(one_by_one())
        self.transport.on_write = lambda: None

    def end(self) -> None:
        """The client ends its stream (a half-close); the transport closes unless the connection keeps it."""
        if not self.connection.eof_received():
            self.transport.close()
        self.loop.run_until_complete(self.settled())

    def lose(self) -> None:
        """The client goes away."""
        self.connection.connection_lost(None)
        self.loop.run_until_complete(self.settled())

    async def settled(self) -> None:
        """Return once no request is on the thread pool (each answer is an event on this loop)."""
        await asyncio.sleep(0)
        while self.connection.answering:
            await asyncio.sleep(0.001)

    def close(self) -> None:
        self.loop.close()

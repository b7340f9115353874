"""A real ``gunicorn`` serving the application on loopback, and the pytest fixture that starts it.

Loaded for the whole test suite with ``-p harness.gunicorn``. The server runs from the repository root with
the project's gunicorn.conf.py, on 127.0.0.1 and a free port, in its own process group so that a test can
kill the master, the workers or all of them, and teardown leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from harness import free_port, wait_until
from harness.command import spawn_in_session

REPO_ROOT = Path(__file__).resolve().parents[1]


def gunicorn_executable() -> str:
    """The gunicorn installed beside the running Python, else the project's .venv one.

    Beside the running Python first: the suite run on another interpreter (.venv-3.13) must serve on it too.
    """
    candidates = (Path(sys.executable).parent / "gunicorn", REPO_ROOT / ".venv" / "bin" / "gunicorn")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("gunicorn not found beside " + sys.executable + " nor in .venv/bin")


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py -b 127.0.0.1:<port> -w <workers> <app>`` from the repo root.

    ``env`` is laid over the current environment; a value of None removes that variable. ``app`` is
    ``src:application`` unless another WSGI app is served under the same settings (the benchmark's reference);
    ``root`` is the folder it runs from (another build of the project: bench/tracing.py's baseline).
    ``with server.start():`` closes it whatever happens inside the block.
    """

    def __init__(
        self,
        env: Mapping[str, str | None],
        workers: int = 4,
        extra_args: Iterable[str] = (),
        app: str = "src:application",
        root: Path = REPO_ROOT,
    ) -> None:
        self.env = dict(env)
        self.root = root
        self.workers = workers
        self.extra_args = tuple(extra_args)
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: str | None = None

    @property
    def pid(self) -> int:
        """The master's process id."""
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process.pid

    def command(self) -> list[str]:
        """The command line this server runs."""
        return [
            gunicorn_executable(),
            "-c",
            "gunicorn.conf.py",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            str(self.workers),
            *self.extra_args,
            self.app,
        ]

    def start(self, timeout: float = 30) -> GunicornServer:
        """Start the master and wait until /healthz answers 200 and every worker is up."""
        self._process, self._log_path = spawn_in_session(
            self.command(), self.root, self.env, prefix="gunicorn-"
        )
        # Removed when this object goes away or at interpreter exit, whichever comes first.
        weakref.finalize(self, _remove, self._log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self._process.returncode}:\n{self.output()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"gunicorn not ready after {timeout} s:\n{self.output()}")

    def ready(self) -> bool:
        """/healthz answers 200 and every worker is up."""
        return self._healthy() and len(self.worker_pids()) >= self.workers

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def worker_pids(self) -> list[int]:
        """Process ids of the master's live children (the workers)."""
        if self._process is None:
            return []
        children = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _parent_pid(int(entry.name)) == self._process.pid:
                pid = int(entry.name)
                if _alive(pid):
                    children.append(pid)
        return sorted(children)

    def wait_until_workers_hold(self, count: int, timeout: float = 15) -> None:
        """Wait until the workers hold ``count`` client connections: accepted, not waiting in the backlog.

        A client connection is an established TCP socket on the server's port held by a worker; workers
        also hold the master's listening socket and, with threads, a socket pair of their own, which do not
        count.
        """

        wait_until(
            lambda: sum(self.held_connections().values()) >= count,
            timeout,
            interval=0.01,
            what=f"the workers to accept {count} connections",
        )

    def held_connections(self) -> dict[int, int]:
        """Client connections each worker holds now, by pid (which sockets count: wait_until_workers_hold)."""
        accepted = _established_inodes(self.port)
        return {pid: len(_socket_inodes(pid) & accepted) for pid in self.worker_pids()}

    def begin_graceful_stop(self, timeout: float = 30) -> None:
        """SIGTERM to the master, then wait until it has closed its listening socket.

        gunicorn's ``Arbiter.stop`` closes the listeners and then, in the same call, sends SIGTERM to every
        worker: once the master no longer holds the listener, the workers are being told to stop. The
        listener is the socket that the master and its workers share, found before the signal.
        """
        listeners = _socket_inodes(self.pid).intersection(
            *(_socket_inodes(pid) for pid in self.worker_pids())
        )
        if not listeners:
            raise RuntimeError("no listening socket shared by the master and its workers")
        os.kill(self.pid, signal.SIGTERM)
        wait_until(
            lambda: not listeners & _socket_inodes(self.pid),
            timeout,
            interval=0.005,
            what="the master to close its listener",
        )

    def kill_master(self) -> None:
        """SIGKILL the master alone, as an OOM kill would; its workers notice and exit on their own."""
        os.kill(self.pid, signal.SIGKILL)
        self._process.wait(timeout=10)

    def kill_all(self) -> None:
        """SIGKILL the master and every worker at the same instant (the whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self._process.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` to the master, wait for it to exit, and return its exit code.

        Whatever is left of the process group afterwards (workers orphaned by a killed master) is killed.
        """
        if self._process is None:
            raise RuntimeError("server not started")
        if self._process.poll() is None:
            os.kill(self._process.pid, sig)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        return self._process.returncode

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        if self._log_path is None:
            return ""
        return Path(self._log_path).read_text(errors="replace")

    def __enter__(self) -> GunicornServer:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (gracefully, so its exit hooks clean up) and remove its log file."""
        if self._process is not None:
            self.stop(signal.SIGTERM, timeout=15)
        if self._log_path is not None:
            _remove(self._log_path)


@pytest.fixture
def gunicorn_server() -> Iterator[Callable[..., GunicornServer]]:
    """Factory: ``gunicorn_server(env, workers=4, extra_args=())`` starts a server; teardown stops all."""
    servers: list[GunicornServer] = []

    def start(
        env: Mapping[str, str | None], workers: int = 4, extra_args: Iterable[str] = (), timeout: float = 30
    ) -> GunicornServer:
        server = GunicornServer(env, workers=workers, extra_args=extra_args)
        servers.append(server)
        return server.start(timeout=timeout)

    yield start
    for server in servers:
        server.close()


def _socket_inodes(pid: int) -> set[str]:
    """The sockets a process holds open ("socket:[inode]")."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def _established_inodes(port: int) -> set[str]:
    """The established TCP sockets whose local port is ``port``, as "socket:[inode]"."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXADDR:HEXPORT; state 01 is ESTABLISHED; the inode is the tenth field.
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    return inodes

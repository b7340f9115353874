"""A command that serves (``make run``, gunicorn) started in its own process group and stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import wait_until

LISTENING = re.compile(r"Listening at: \S+ \((\d+)\)")


def children(pid: int) -> list[int]:
    """Process ids of the live children of ``pid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def answers(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URLs only
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def spawn_in_session(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str | None], prefix: str = "serving-"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``argv`` in its own process group, stdout and stderr to a new temp file; (process, log path).

    ``env`` is laid over the current environment; a value of None removes that variable.
    """
    environment = dict(os.environ)
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    log_fd, log_path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    return process, log_path


class ServingCommand:
    """``argv`` run in ``cwd`` with ``env`` laid over the environment (None removes a variable)."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str | None]) -> None:
        self.argv = list(argv)
        self.process, log_path = spawn_in_session(argv, cwd, env)
        self.log_path = Path(log_path)

    def output(self) -> str:
        """Everything the command wrote so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, url: str, timeout: float = 120) -> None:
        """Wait until ``url`` answers 200; fail with the output if the command exits first."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.argv} exited with {self.process.returncode}:\n{self.output()}")
            return answers(url)

        wait_until(ready, timeout, what=f"{url} to answer")

    def gunicorn_master(self) -> int:
        """The gunicorn master's pid, from its "Listening at" line."""
        found = LISTENING.search(self.output())
        if found is None:
            raise AssertionError(f"no 'Listening at' line in:\n{self.output()}")
        return int(found.group(1))

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM the process group, wait for all of it (gunicorn's exit hooks clean up), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not self._group_alive(), 15, what="the process group to exit")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> ServingCommand:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.stop()

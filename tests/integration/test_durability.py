"""A 201 from ``POST /register`` means the user is on disk: a real gunicorn worker's system calls, traced.

A SIGKILL test cannot see durability (the page cache survives the kill; only a power cut loses it), so the
worker's system calls are read instead, with Debian's ``strace`` attached to the one worker of a real
``gunicorn -w 1``. The order that makes a registration durable:

1. the new content is written to a temp file in the data folder and that file is fsynced,
2. the temp file is renamed over ``data.json`` (the rename is the moment the new content becomes visible),
3. the folder is fsynced, so that the rename itself survives a power cut,
4. only then is the ``201`` written to the client's socket.

Needs strace and the right to trace another process (root): marked ``system``, run by ``make test-system``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from harness import wait_until
from harness.gunicorn import GunicornServer

pytestmark = pytest.mark.system

# strace -y prints the path behind each file descriptor: fsync(7</tmp/x/data.json.tmp-abc>) = 0
FSYNC = re.compile(r"^(?:fsync|fdatasync)\(\d+<(?P<path>[^>]*)>\)\s+= 0")
RENAME = re.compile(r'^rename(?:at2?)?\((?:[^,]+, )?"(?P<source>[^"]+)", (?:[^,]+, )?"(?P<target>[^"]+)"')
RESPONSE = re.compile(
    r'^(?:sendto|write|sendmsg|writev)\(\d+<(?:TCP|TCPv6|socket):[^>]*>, .*"HTTP/1\.[01] (?P<status>\d{3})'
)


def strace_binary() -> str:
    binary = shutil.which("strace")
    if binary is None:
        pytest.fail("strace not installed: `make test-system` installs it (apt-get install strace)")
    return binary


def traced_calls(trace: Path) -> list[str]:
    """The system calls of the trace, without strace's pid prefix, timestamps or resumed/unfinished noise."""
    calls = []
    for traced in trace.read_text(errors="replace").splitlines():
        line = re.sub(r"^\d+\s+", "", traced)  # the thread id that -f puts first
        if "<unfinished ...>" in line or "resumed>" in line or line.startswith(("---", "+++")):
            continue
        calls.append(line)
    return calls


def test_register_fsyncs_the_file_then_renames_then_fsyncs_the_folder_before_the_201(tmp_path):
    data_dir = (tmp_path / "var").resolve()
    data_dir.mkdir()
    data_file = data_dir / "data.json"
    env = {
        "DATA_FILE_PATH": str(data_file),
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": None,
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
        "LOG_LEVEL": "info",
    }
    trace = tmp_path / "worker.strace"
    with GunicornServer(env, workers=1).start(timeout=60) as server:
        (worker,) = server.worker_pids()
        tracer = subprocess.Popen(
            [
                strace_binary(),
                "-f",
                "-y",
                "-s",
                "64",
                "-e",
                "trace=fsync,fdatasync,rename,renameat,renameat2,sendto,sendmsg,write,writev",
                "-o",
                str(trace),
                "-p",
                str(worker),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # strace says so on stderr once it has attached: requests sent before then would not be traced.
            attached = tracer.stderr.readline()
            assert "attached" in attached, attached
            response = requests.post(
                f"{server.url}/register",
                json={"username": "durable", "password": "correct horse battery"},
                timeout=30,
            )
            wait_until(
                lambda: any(RESPONSE.match(call) for call in traced_calls(trace)),
                timeout=30,
                what="the response in the trace",
            )
        finally:
            tracer.send_signal(signal.SIGINT)  # detaches from the worker, which goes on serving
            tracer.wait(timeout=30)
            tracer.stderr.close()

    assert response.status_code == 201
    calls = traced_calls(trace)

    def first(wanted, start: int = 0) -> int:
        """Index of the first call from ``start`` on for which ``wanted(call)`` holds."""
        for index in range(start, len(calls)):
            if wanted(calls[index]):
                return index
        raise AssertionError("not in the trace:\n" + "\n".join(calls))

    def fsync_of(path: str):
        return lambda call: (match := FSYNC.match(call)) is not None and match["path"] == path

    def renamed_over_the_data_file(call: str) -> bool:
        match = RENAME.match(call)
        return (
            match is not None
            and match["source"].startswith(f"{data_file}.tmp-")
            and match["target"] == str(data_file)
        )

    rename = first(renamed_over_the_data_file)
    temp_file = RENAME.match(calls[rename])["source"]
    answered = first(lambda call: (match := RESPONSE.match(call)) is not None and match["status"] == "201")

    assert first(fsync_of(temp_file)) < rename, "the data file is fsynced before the rename makes it visible"
    # The folder's fsync that counts is the one after this rename: it makes the rename itself durable.
    assert first(fsync_of(str(data_dir)), start=rename) < answered, "the folder is fsynced before the 201"
    assert rename < answered
    assert os.path.exists(data_file)

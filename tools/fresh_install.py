"""The first contact, timed: ``python3 -m tools.fresh_install`` (``make check-install``, a ``.ci/run`` gate).

Clones the repository twice into a temporary folder and does there what the README tells a new user to do,
with cold caches (uv's and pip's in that folder) and the pip that ``python3 -m venv`` gives, never upgraded:
``make run`` until ``/healthz`` answers, and in the other clone ``make lint``, the install and first step of
``make test`` (the whole suite is the make-test gate). Any install error fails the gate. The seconds each took
go to ``build/figures/install.json``, which ``make docs`` shows in docs/development.md.

Only python3, git and make are needed: this runs before any virtualenv exists, so it imports the standard
library only. It clones the committed HEAD: uncommitted changes are not part of what it checks.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "build" / "figures" / "install.json"
# Far above what was measured (about 30 s each with a cold cache): a hung index fails the gate.
INSTALL_TIMEOUT = 900
# The virtualenv stamps of the Makefile: what `make run` and `make test` install first.
RUNTIME_STAMP = ".venv/.installed-runtime"
DEV_STAMP = ".venv/.installed-dev"


def cold_environment(scratch: Path) -> dict[str, str]:
    """The caller's environment with caches of its own under ``scratch`` and no virtualenv active."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "VENV")
    }
    env["UV_CACHE_DIR"] = str(scratch / "uv-cache")
    env["PIP_CACHE_DIR"] = str(scratch / "pip-cache")
    env.pop("PIP_NO_CACHE_DIR", None)
    return env


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with text output; the commands are this module's own (make, git, the venvs)."""
    return subprocess.run(command, text=True, **options)  # noqa: S603, PLW1510 - callers pass check=


def venv_pip_version(venv: Path) -> str:
    """The version of the pip inside ``venv`` (the one it was created with, unless something upgraded it)."""
    out = run(
        [str(venv / "bin" / "python"), "-m", "pip", "--version"],
        capture_output=True,
        check=True,
    ).stdout
    return out.split()[1]


def python_of_make() -> str:
    """The interpreter `make` uses: the Makefile's PYTHON (python3), as a new user has it."""
    return os.environ.get("PYTHON", "python3")


def oldest_supported() -> str:
    """The lower bound of pyproject.toml's requires-python ("3.11")."""
    match = re.search(
        r'^requires-python = ">=(\d+\.\d+)"', (REPO / "pyproject.toml").read_text("utf-8"), re.M
    )
    if match is None:
        raise RuntimeError('pyproject.toml has no requires-python = ">=X.Y"')
    return match.group(1)


def stock_pip(python: str) -> str:
    """The pip that ``python -m venv`` puts in a new virtualenv: the wheel bundled with ensurepip."""
    return run(
        [python, "-c", "import ensurepip; print(ensurepip.version())"],
        capture_output=True,
        check=True,
    ).stdout.strip()


def clone(destination: Path) -> None:
    """A fresh clone of this repository's HEAD, as a new user gets it."""
    run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(destination)], check=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL built here
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def time_make_run(workdir: Path, env: dict[str, str]) -> float:
    """Seconds from ``make run`` in a fresh clone to the first 200 of ``/healthz``; then the server stops."""
    port = _free_port()
    started = time.monotonic()
    # A session of its own: make, gunicorn and its workers are stopped together, by this group only.
    process = subprocess.Popen(  # noqa: S603 - fixed arguments, make from PATH as a user runs it
        ["make", "run", f"PORT={port}"],  # noqa: S607
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    try:
        while not _healthy(f"http://127.0.0.1:{port}/healthz"):
            if process.poll() is not None:
                raise RuntimeError(f"make run exited with {process.returncode} before /healthz answered")
            if time.monotonic() - started > INSTALL_TIMEOUT:
                raise RuntimeError(f"make run: no answer from /healthz after {INSTALL_TIMEOUT} s")
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop ``make run``: SIGTERM to make's child (gunicorn) so that make exits quietly, then to what is left
    of the group, which is this process's own (start_new_session)."""
    if process.poll() is None:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()] if children.is_file() else []
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    deadline = time.monotonic() + 60
    while _group_alive(process.pid):
        # A shell between make and gunicorn leaves gunicorn behind when it dies first.
        os.killpg(process.pid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def time_make(workdir: Path, env: dict[str, str], *targets: str) -> float:
    """Seconds ``make TARGETS`` took; CalledProcessError when it fails."""
    started = time.monotonic()
    run(["make", *targets], cwd=workdir, env=env, check=True, timeout=INSTALL_TIMEOUT)
    return time.monotonic() - started


def uv_version(workdir: Path) -> str:
    """The uv pinned in requirements-uv.txt."""
    match = re.search(r"^uv==(\S+)", (workdir / "requirements-uv.txt").read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else "?"


def check_venv(workdir: Path, expected_pip: str) -> None:
    """The installed set is consistent, and the venv's pip is still the stock one."""
    venv = workdir / ".venv"
    run(
        [str(venv / "bin" / "uv"), "pip", "check", "--python", str(venv / "bin" / "python")],
        check=True,
        timeout=120,
    )
    pip = venv_pip_version(venv)
    if pip != expected_pip:
        raise RuntimeError(f"the venv's pip is {pip}, not the stock {expected_pip}: something upgraded it")


def main() -> int:
    """Both fresh clones, timed; the figures written to build/figures/install.json."""
    python = python_of_make()
    version = run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        check=True,
    ).stdout.strip()
    pip = stock_pip(python)
    if not version.startswith(oldest_supported() + "."):
        # The oldest Python carries the oldest pip: a newer one would hide what this gate is for.
        print(f"{python} is Python {version}, not the oldest supported {oldest_supported()}", file=sys.stderr)
        return 1
    print(f"fresh install with {python} (Python {version}, stock pip {pip}), cold caches", flush=True)
    with tempfile.TemporaryDirectory(prefix="fresh-install-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            clone(scratch / "run")
            run_seconds = time_make_run(scratch / "run", cold_environment(scratch / "run-caches"))
            check_venv(scratch / "run", pip)
            print(f"make run: /healthz answered {run_seconds:.1f} s after the fresh clone", flush=True)
            clone(scratch / "test")
            test_seconds = time_make(scratch / "test", cold_environment(scratch / "test-caches"), "lint")
            check_venv(scratch / "test", pip)
            print(f"make lint (the dev venv of make test): {test_seconds:.1f} s", flush=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as error:
            print(f"fresh install FAILED: {error}", file=sys.stderr)
            return 1
        figures = {
            "date": datetime.datetime.now(tz=datetime.UTC).date().isoformat(),
            "python": version,
            "pip": pip,
            "uv": uv_version(scratch / "test"),
            "machine": platform.machine(),
            "make_run_seconds": round(run_seconds, 1),
            "make_test_install_seconds": round(test_seconds, 1),
        }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

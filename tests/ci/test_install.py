"""The virtualenvs install with the pip that ``python -m venv`` gives, as a new user's ``make test`` does.

The whole first contact (fresh clone, cold caches, timed) is ``make check-install``, a gate of ``.ci/run``;
this is its core, bounded: the Makefile and the real requirement files in a scratch folder, the dev
virtualenv made there by ``make`` with the stock pip of the interpreter running the suite (23.2.1 on
Python 3.11), caches warm.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FILES = ("Makefile", "requirements-uv.txt", "requirements.txt", "requirements-dev.txt")


def base_python() -> str:
    """The interpreter this suite's virtualenv was made from: a new user's python3."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


def stock_pip(python: str) -> str:
    """The pip version ``python -m venv`` installs: the wheel bundled with that interpreter's ensurepip."""
    return subprocess.run(
        [python, "-c", "import ensurepip; print(ensurepip.version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_make_installs_the_dev_virtualenv_with_the_stock_pip(tmp_path):
    for name in FILES:
        shutil.copy(REPO / name, tmp_path / name)
    env = {
        key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "VENV", "PYTHONPATH")
    }
    python = base_python()

    result = subprocess.run(
        ["make", "--no-print-directory", ".venv/.installed-dev", f"PYTHON={python}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # Byte code written at install (checked before anything here imports them): a process without it compiles
    # every module it imports again, and keeps nothing under PYTHONDONTWRITEBYTECODE.
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_packages = tmp_path / ".venv" / "lib" / version / "site-packages"
    for module in ("psycopg/__init__.py", "flask/app.py", "_pytest/main.py"):
        assert Path(importlib.util.cache_from_source(str(site_packages / module))).is_file(), module
    venv_python = str(tmp_path / ".venv" / "bin" / "python")
    pip = subprocess.run(
        [venv_python, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout
    # Nothing upgraded pip on the way: the install must not depend on a newer one.
    assert pip.split()[1] == stock_pip(python)
    # pytest-cov wants coverage[toml]: the extra that pip 23.2.1 could not take from a hashed file.
    imported = subprocess.run(
        [
            venv_python,
            "-c",
            "import coverage, pytest_cov, ruff, flask, gunicorn; print(coverage.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    checked = subprocess.run(
        [str(tmp_path / ".venv" / "bin" / "uv"), "pip", "check", "--python", venv_python],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

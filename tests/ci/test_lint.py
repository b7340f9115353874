"""``make lint`` type-checks src/ with mypy, pinned with hashes in requirements-dev.txt, and a type error in
the package fails it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def mypy(root: Path) -> subprocess.CompletedProcess[str]:
    """mypy as ``make lint`` runs it (its settings from pyproject.toml), in ``root``."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(root / ".mypy_cache")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_make_lint_runs_mypy():
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "lint", "DEV_STAMP="],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()

    # The venv is .venv, or VENV=... as `make test VENV=.venv-3.13` exports it.
    assert any(line.endswith("/bin/mypy") for line in planned), planned


def test_mypy_is_pinned_with_hashes_in_the_dev_requirements():
    requirements = (REPO / "requirements-dev.txt").read_text()
    pinned = requirements.split("\nmypy==", 1)[1].split("\n\n", 1)[0].split("\n# ", 1)[0]

    assert "--hash=sha256:" in pinned


def test_a_type_error_in_src_fails_mypy(tmp_path):
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert mypy(tmp_path).returncode == 0
    config = tmp_path / "src" / "config.py"
    config.write_text(config.read_text() + '\n\nSECRET_KEY_MIN_BYTES_TEXT: int = "32"\n')

    result = mypy(tmp_path)

    assert result.returncode == 1
    assert "src/config.py" in result.stdout
    assert (
        'Incompatible types in assignment (expression has type "str", variable has type "int")'
        in result.stdout
    )

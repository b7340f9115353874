"""Fixtures of the storage tests: stores on real files and a real PostgreSQL, and small tmpfs mounts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from src.storage import JsonFileStore, PostgresStore


def _cannot(reason: str) -> None:
    pytest.fail(f"{reason}: run `make test-system` as root", pytrace=False)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    """Path of a data file that does not exist yet, in a folder that does not exist yet."""
    return tmp_path / "var" / "data.json"


@pytest.fixture
def json_store(data_file: Path) -> Iterator[JsonFileStore]:
    store = JsonFileStore(data_file)
    yield store
    store.close()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_url, min_size=1, max_size=4, timeout=5)
    yield store
    store.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of this size (``"64k"``); unmounted afterwards. Root only: tests marked ``system``."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            _cannot("mounting a tmpfs (full disk, read-only folder) needs root")
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            _cannot(f"mount -t tmpfs failed: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def remount(target: Path, mode: str) -> None:
    """Remount a tmpfs from the fixture read-only (``"ro"``) or read-write (``"rw"``)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True)

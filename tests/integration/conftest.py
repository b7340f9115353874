"""What the tests against a real gunicorn share: the server's environment for each store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import FAST_ARGON2, UNSET


@pytest.fixture(params=["json", "postgresql"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str | None]:
    """A server environment for one store (a fresh data file, or the test database), with its own key."""
    env: dict[str, str | None] = {
        **UNSET,
        **FAST_ARGON2,
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "SECRET_KEY": os.urandom(32).hex(),
    }
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    return env

"""Create the PostgreSQL schema: ``python -m src.migrate``.

Reads DATABASE_URL (and DATABASE_TIMEOUT_SECONDS) from the environment, after loading ``.env`` from the
working directory (the real environment wins). Idempotent and safe to run from many pods at once: the DDL
runs under the same advisory lock the application takes at startup. Prints one line; exits 0 on success,
1 when the database cannot be reached, 2 when the configuration is missing or invalid.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from src.config import load_env_file
from src.storage.base import StoreUnavailable
from src.storage.postgres import create_schema


def migrate(environ: Mapping[str, str]) -> tuple[int, str]:
    """Create the schema for the database named in ``environ``; return (exit code, one line to print)."""
    url = environ.get("DATABASE_URL", "").strip()
    if not url:
        return 2, "migrate: DATABASE_URL is not set"
    raw_timeout = environ.get("DATABASE_TIMEOUT_SECONDS", "5").strip()
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        return 2, f"migrate: DATABASE_TIMEOUT_SECONDS must be a positive number, got {raw_timeout!r}"
    try:
        create_schema(url, timeout)
    except StoreUnavailable as exc:
        return 1, f"migrate: {exc}"
    return 0, "migrate: schema is up to date (tables users, login_failures)"


def main() -> int:
    """Entry point of ``python -m src.migrate``."""
    load_env_file()
    code, line = migrate(os.environ)
    print(line, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())

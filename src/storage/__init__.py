"""User storage: one interface, a JSON file by default, PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

from typing import Any

from .base import RefreshRefused, Session, StoreError, StoreUnavailable, User, UsernameTaken, UserStore
from .json_file import JsonFileStore
from .postgres import PostgresStore

__all__ = [
    "JsonFileStore",
    "PostgresStore",
    "RefreshRefused",
    "Session",
    "StoreError",
    "StoreUnavailable",
    "User",
    "UserStore",
    "UsernameTaken",
    "store_from_settings",
]


def store_from_settings(settings: Any) -> UserStore:
    """PostgresStore when ``settings.database_url`` is set, else JsonFileStore at ``settings.data_file_path``.

    Safe to call before gunicorn forks: neither store keeps a file or connection open across calls, and the
    PostgreSQL pool opens in the process that first uses it.
    """
    if settings.database_url:
        return PostgresStore(
            settings.database_url,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            timeout=settings.database_timeout_seconds,
            password_file=settings.database_password_file,
        )
    return JsonFileStore(settings.data_file_path)

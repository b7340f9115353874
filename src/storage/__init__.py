"""User storage: one interface, a JSON file by default, PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import RefreshRefused, Session, StoreError, StoreUnavailable, User, UsernameTaken, UserStore
from .json_file import JsonFileStore

if TYPE_CHECKING:
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
        from .postgres import PostgresStore  # noqa: PLC0415 - psycopg only in the processes that use it

        return PostgresStore(
            settings.database_url,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            timeout=settings.database_timeout_seconds,
            password_file=settings.database_password_file,
        )
    return JsonFileStore(settings.data_file_path)


def __getattr__(name: str) -> Any:
    # PostgresStore is imported when first named: psycopg and its C library cost each worker about 12 MiB of
    # memory, which a JSON-store worker never uses (docs/performance.md, memory).
    if name == "PostgresStore":
        from .postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

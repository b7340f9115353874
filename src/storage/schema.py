"""Versioned PostgreSQL migrations: the SQL files of ``migrations/``, applied by yoyo-migrations under the
schema lock.

Each file ``NNNN_name.sql`` is one version (``NNNN_name.rollback.sql`` undoes it); yoyo records the versions
applied in ``_yoyo_migration`` and runs each file in one transaction, so a failed migration leaves nothing
half done. Every step runs while this process holds the session advisory lock ``SCHEMA_LOCK_ID`` on a
connection of its own: pods migrating at once, and workers that find the schema behind, go one after the
other, and the next finds the work done. Yoyo's own lock (a row of ``yoyo_lock``, taken only while it creates
its bookkeeping tables) is thus never contended: a row found there was left by a killed process, and goes.

The baseline, ``0001_baseline``, is the schema of the release before versions. A database made by that release
has no ``_yoyo_migration``: when the whole baseline is there (``baseline_present``) it is marked as applied
without running it, then the later versions run. yoyo is imported only when something is to be done, so a
worker that finds the schema current never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from .base import StoreUnavailable

# Every process that creates or migrates the schema takes this advisory lock first, so many workers or pods
# starting at once migrate one after the other.
SCHEMA_LOCK_ID = 0x666C61736B617069  # "flaskapi"
MIGRATIONS_FOLDER = Path(__file__).with_name("migrations")
BASELINE = "0001_baseline"
VERSION_TABLE = "_yoyo_migration"
# yoyo's bookkeeping tables, with what the application's role may do with their rows: read which versions are
# applied (the store checks it at startup), nothing else.
MIGRATION_TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    VERSION_TABLE: ("SELECT",),
    "_yoyo_log": (),
    "_yoyo_version": (),
    "yoyo_lock": (),
}

# What the baseline holds, looked up to recognise a database made by the release before versions.
SCHEMA_OBJECTS = (
    "users",
    "login_failures",
    "login_failures_key_at",
    "login_failures_at",
    "store_identity",
    "sessions",
    "sessions_user_id",
    "sessions_expires_at",
    "refresh_tokens",
    "refresh_tokens_session_id",
)
SCHEMA_TRIGGERS = ("users_changed", "users_truncated", "sessions_ended", "sessions_truncated")
# Columns added to a table after its first release: a schema without them is migrated again.
SCHEMA_COLUMNS = ("users.disabled",)

Connect = Callable[[], psycopg.Connection[Any]]


class MigrationFailed(StoreUnavailable):
    """A migration's SQL failed (not the connection): its transaction was rolled back."""

    def __init__(self, migration_id: str, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        super().__init__(f"migration {migration_id} failed: {text}")
        self.migration_id = migration_id


@cache
def migration_ids() -> tuple[str, ...]:
    """The versions this release knows, oldest first (the names of the SQL files, in order)."""
    return tuple(
        sorted(
            path.name.removesuffix(".sql")
            for path in MIGRATIONS_FOLDER.glob("*.sql")
            if not path.name.endswith(".rollback.sql")
        )
    )


def applied_versions(conn: psycopg.Connection[Any]) -> list[str]:
    """The versions of this release recorded as applied, oldest first (none before versions existed)."""
    (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone() or (False,)
    if not exists:
        return []
    rows = conn.execute(f"SELECT DISTINCT migration_id FROM {VERSION_TABLE}").fetchall()  # noqa: S608
    applied = {row[0] for row in rows}
    return [version for version in migration_ids() if version in applied]


def schema_current(conn: psycopg.Connection[Any]) -> bool:
    """Whether every version of this release is applied (one or two queries, no lock)."""
    return len(applied_versions(conn)) == len(migration_ids())


def baseline_present(conn: psycopg.Connection[Any]) -> bool:
    """Whether every table, index, trigger and column of the baseline exists."""
    row = conn.execute(
        "SELECT bool_and(to_regclass(name) IS NOT NULL) AND (SELECT count(*) FROM pg_trigger "
        "WHERE tgrelid IN (to_regclass('users'), to_regclass('sessions')) AND tgname = ANY(%s)) = %s "
        "AND (SELECT count(*) FROM pg_attribute WHERE NOT attisdropped "
        "AND attrelid::regclass::text || '.' || attname = ANY(%s)) = %s "
        "FROM unnest(%s::text[]) AS name",
        (
            list(SCHEMA_TRIGGERS),
            len(SCHEMA_TRIGGERS),
            list(SCHEMA_COLUMNS),
            len(SCHEMA_COLUMNS),
            list(SCHEMA_OBJECTS),
        ),
    ).fetchone()
    return row is not None and bool(row[0])


def _yoyo(connect: Connect) -> tuple[Any, Any]:
    """A yoyo backend whose connections come from ``connect``, and this release's migrations."""
    from yoyo import read_migrations  # noqa: PLC0415 - only when something is to be done
    from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend  # noqa: PLC0415
    from yoyo.connections import parse_uri  # noqa: PLC0415

    class Backend(PostgresqlPsycopgBackend):
        # The project's own connections (password file read at each, connect timeout), not a URI of yoyo's.
        def connect(self, dburi: Any) -> psycopg.Connection[Any]:
            return connect()

    backend = Backend(parse_uri("postgresql+psycopg://"), VERSION_TABLE)
    backend.init_database()
    backend.break_lock()  # called under the advisory lock only: no other process is inside yoyo
    return backend, read_migrations(str(MIGRATIONS_FOLDER))


def _locked(connect: Connect, work: Callable[[psycopg.Connection[Any], Connect], list[str]]) -> list[str]:
    with connect() as holder:
        # A session lock on a connection of its own, released when it closes: yoyo runs each migration on
        # connections it opens, and each runs while this one holds the lock.
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        return work(holder, connect)


def _run_steps(migrations: Any, step: Callable[[Any], None]) -> None:
    for migration in migrations:
        try:
            step(migration)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            raise MigrationFailed(migration.id, exc) from None


def _upgrade(holder: psycopg.Connection[Any], connect: Connect) -> list[str]:
    if schema_current(holder):
        return []  # another process migrated while this one waited for the lock
    backend, migrations = _yoyo(connect)
    with backend:
        if BASELINE not in applied_versions(holder) and baseline_present(holder):
            # Made by the release before versions: its DDL is there, and running it again could fail (a
            # CREATE OR REPLACE TRIGGER on a table the migrating role does not own).
            _run_steps([m for m in migrations if m.id == BASELINE], lambda m: backend.mark_migrations([m]))
        pending = backend.to_apply(migrations)
        _run_steps(pending, backend.apply_one)
        return [migration.id for migration in pending]


def upgrade(connect: Connect) -> list[str]:
    """Apply every pending version under the schema lock; the versions applied now, oldest first."""
    return _locked(connect, _upgrade)


def rollback_to(connect: Connect, target: str) -> list[str]:
    """Undo each applied version after ``target`` under the schema lock; the versions undone, newest first."""
    if target not in migration_ids():
        raise ValueError(f"unknown version {target!r}: one of {', '.join(migration_ids())}")

    def undo(holder: psycopg.Connection[Any], connect: Connect) -> list[str]:
        backend, migrations = _yoyo(connect)
        with backend:
            later = migrations.__class__(m for m in migrations if m.id > target)
            undone = backend.to_rollback(later)
            _run_steps(undone, backend.rollback_one)
            return [migration.id for migration in undone]

    return _locked(connect, undo)

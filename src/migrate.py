"""Migrate the PostgreSQL schema to this release's version and set up the application's role:
``python -m src.migrate`` (``--rollback-to VERSION`` undoes the versions after VERSION instead).

Reads the environment (after loading ``.env`` from the working directory; the real environment wins):

* ``DATABASE_URL`` (and ``DATABASE_PASSWORD_FILE``): the role that owns the schema;
* ``DATABASE_TIMEOUT_SECONDS``: the timeout of one connection attempt;
* ``DATABASE_WAIT_SECONDS`` (default 0): how long to keep trying while the database does not answer yet, with
  a back-off of 1 s doubling to 5 s between attempts; a Kubernetes init container waits for PostgreSQL to
  start instead of exiting at once and being restarted with the kubelet's growing back-off;
* ``DATABASE_APP_URL`` and ``DATABASE_APP_PASSWORD_FILE`` (optional): the application's own role. When the
  role does not exist it is created with the password of that file; then it is granted only what the
  application does (connect, and on each table the row rights listed in ``TABLE_PRIVILEGES``, revoking any
  other), never DDL. An existing role's password is left alone: after creation, whatever rotates the
  password owns it.

The versions are the SQL files of ``src/storage/migrations/``, applied by yoyo-migrations
(src/storage/schema.py); a database made by the release before versions is recognised as at the baseline.
Idempotent and safe to run from many pods at once: the migrations, then the role's creation and grants, run
under the advisory lock the application takes at startup. Prints one line; exits 0 on success, 1 when the
database cannot be reached in time, 2 when the configuration or the arguments are missing or invalid, 3 when a
table of the schema has no entry in ``TABLE_PRIVILEGES`` (the release forgot to decide what the application
may do with it), 4 when a migration fails (its transaction is rolled back; the line names it and the
database's error).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from src.config import load_env_file
from src.storage.base import StoreUnavailable
from src.storage.postgres import (
    TABLE_PRIVILEGES,
    connector,
    create_schema,
    describe_error,
    password_kwargs,
)
from src.storage.schema import (
    MIGRATION_TABLE_PRIVILEGES,
    SCHEMA_LOCK_ID,
    Connect,
    MigrationFailed,
    migration_ids,
    rollback_to,
)

FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 5.0


def _seconds(environ: Mapping[str, str], name: str, default: str, *, zero_allowed: bool) -> float | str:
    """A number of seconds, or the one-line error naming the variable."""
    raw = environ.get(name, default).strip() or default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value > 0 or (zero_allowed and value == 0):
        return value
    kind = "a number >= 0" if zero_allowed else "a positive number"
    return f"migrate: {name} must be {kind}, got {raw!r}"


def with_retry(
    attempt: Callable[[], None], wait_seconds: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Run ``attempt`` until it stops raising StoreUnavailable or ``wait_seconds`` have passed."""
    deadline = time.monotonic() + wait_seconds
    delay = FIRST_RETRY_SECONDS
    while True:
        try:
            attempt()
        except StoreUnavailable as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            print(f"migrate: waiting for the database ({exc})", file=sys.stderr, flush=True)
            sleep(min(delay, remaining))
            delay = min(delay * 2, LONGEST_RETRY_SECONDS)
        else:
            return


class UngrantedTablesError(Exception):
    """The schema holds tables that TABLE_PRIVILEGES does not name."""


def ensure_app_role(
    url: str, password_file: str | None, app_url: str, app_password_file: str, timeout: float
) -> str:
    """Create the application's role if missing, grant it TABLE_PRIVILEGES and no more; return its name."""
    parts = urlsplit(app_url)
    role, database = unquote(parts.username or ""), unquote(parts.path.lstrip("/"))
    try:
        with (
            psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(timeout)), **password_kwargs(password_file)
            ) as conn,
            conn.transaction(),
        ):
            # Under the schema lock: pods migrating at once would race to create the role, and concurrent
            # GRANTs on one table fail with "tuple concurrently updated".
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            ungranted = [
                name
                for (name,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
                )
                if name not in TABLE_PRIVILEGES and name not in MIGRATION_TABLE_PRIVILEGES
            ]
            if ungranted:
                raise UngrantedTablesError(", ".join(ungranted))
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                password = password_kwargs(app_password_file)["password"]
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
            for table, privileges in {**TABLE_PRIVILEGES, **MIGRATION_TABLE_PRIVILEGES}.items():
                # Revoked first, so that a right a release no longer needs does not outlive it.
                conn.execute(
                    sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), sql.Identifier(role))
                )
                if privileges:
                    conn.execute(
                        sql.SQL("GRANT {} ON {} TO {}").format(
                            sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges),
                            sql.Identifier(table),
                            sql.Identifier(role),
                        )
                    )
    except psycopg.Error as exc:
        raise StoreUnavailable(f"database unavailable: {describe_error(exc, url)}") from None
    return role


def migrate(  # noqa: PLR0911 - one return per exit code and configuration error, in the order checked
    environ: Mapping[str, str], sleep: Callable[[float], None] = time.sleep, rollback_to_version: str = ""
) -> tuple[int, str]:
    """Migrate the schema (and set up the application's role) named in ``environ``; (exit code, one line).

    With ``rollback_to_version``, undo the versions applied after it instead (no role step).
    """
    url = environ.get("DATABASE_URL", "").strip()
    if not url:
        return 2, "migrate: DATABASE_URL is not set"
    timeout = _seconds(environ, "DATABASE_TIMEOUT_SECONDS", "5", zero_allowed=False)
    wait_seconds = _seconds(environ, "DATABASE_WAIT_SECONDS", "0", zero_allowed=True)
    if isinstance(timeout, str) or isinstance(wait_seconds, str):
        return 2, timeout if isinstance(timeout, str) else str(wait_seconds)
    if rollback_to_version and rollback_to_version not in migration_ids():
        return 2, f"migrate: unknown version {rollback_to_version!r}: one of {', '.join(migration_ids())}"
    password_file = environ.get("DATABASE_PASSWORD_FILE", "").strip() or None
    app_url = environ.get("DATABASE_APP_URL", "").strip()
    app_password_file = environ.get("DATABASE_APP_PASSWORD_FILE", "").strip()
    if bool(app_url) != bool(app_password_file):
        return 2, "migrate: DATABASE_APP_URL and DATABASE_APP_PASSWORD_FILE go together"
    if rollback_to_version:
        connect = connector(url, timeout, password_file)
        return _rollback(connect, url, rollback_to_version, wait_seconds, sleep)
    roles = ""
    applied: list[str] = []
    try:
        with_retry(lambda: applied.extend(create_schema(url, timeout, password_file)), wait_seconds, sleep)
        if app_url:
            role = ensure_app_role(url, password_file, app_url, app_password_file, timeout)
            roles = f", role {role} granted what the application does with them"
    except MigrationFailed as exc:
        return 4, f"migrate: {exc}"
    except StoreUnavailable as exc:
        return 1, f"migrate: {exc}"
    except UngrantedTablesError as exc:
        return 3, f"migrate: no entry in TABLE_PRIVILEGES (src/storage/postgres.py) for the tables {exc}"
    return 0, (
        f"migrate: schema is up to date at version {migration_ids()[-1]} "
        f"(applied now: {', '.join(applied) or 'none'}; tables {', '.join(TABLE_PRIVILEGES)}{roles})"
    )


def _rollback(
    connect: Connect, url: str, version: str, wait_seconds: float, sleep: Callable[[float], None]
) -> tuple[int, str]:
    undone: list[str] = []

    def attempt() -> None:
        try:
            undone.extend(rollback_to(connect, version))
        except MigrationFailed:
            raise
        except psycopg.Error as exc:
            raise StoreUnavailable(f"database unavailable: {describe_error(exc, url)}") from None

    try:
        with_retry(attempt, wait_seconds, sleep)
    except MigrationFailed as exc:
        return 4, f"migrate: {exc}"
    except StoreUnavailable as exc:
        return 1, f"migrate: {exc}"
    return 0, f"migrate: schema rolled back to version {version} (undone now: {', '.join(undone) or 'none'})"


def main(argv: Sequence[str] = ()) -> int:
    """Entry point of ``python -m src.migrate [--rollback-to VERSION]``."""
    load_env_file()
    args = list(argv)
    if args and (len(args) != 2 or args[0] != "--rollback-to" or not args[1]):
        print("migrate: usage: python -m src.migrate [--rollback-to VERSION]", file=sys.stderr)
        return 2
    code, line = migrate(os.environ, rollback_to_version=args[1] if args else "")
    print(line, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

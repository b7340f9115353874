"""Operator commands: ``flask --app src users|sessions|keys|config|migrate ...`` (docs/cli.md).

They work on the store the settings name (the JSON file or PostgreSQL), as the running service does, and
take effect in every worker and pod at once: a disabled user's sessions end in the same step, and every
process checks the session of each token it is shown. Passwords are read from a prompt or from standard
input, never from the command line (which other users of the machine can read in the process list).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from urllib.parse import urlsplit, urlunsplit

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .config import ConfigError, Settings, load_env_file
from .errors import InvalidRequest
from .storage import User, UsernameTaken, UserStore

# The exit code of a bad configuration, as for gunicorn and ``flask --app src`` failing to load the app.
CONFIG_ERROR_EXIT_CODE = 4
# Settings shown as "set" or "unset", never with their value.
SECRET_SETTINGS = frozenset({"secret_key", "secret_key_previous"})

users = AppGroup("users", help="Create, list, disable, enable and delete users.")
sessions = AppGroup("sessions", help="End users' sessions.")
keys = AppGroup("keys", help="The token signing key.")
config = AppGroup("config", help="The effective configuration.")


def _store() -> UserStore:
    return current_app.extensions["user_store"]


def _user(username: str) -> User:
    user = _store().find_by_username(username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    return user


# ------------------------------------------------------------------------------------------------ users


@users.command("create")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)
def create_user(username: str, password_stdin: bool) -> None:
    """Create USERNAME with a password typed at the prompt (twice) or read from standard input."""
    from .schemas import Credentials, parse_body  # noqa: PLC0415 - the routes' rules

    def check(password: str) -> None:
        try:
            parse_body(Credentials, {"username": username, "password": password})
        except InvalidRequest as exc:
            raise click.ClickException(exc.detail.rstrip(".")) from None

    check("x" * 8)  # the name first, before a password is asked for
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    check(password)
    passwords = current_app.extensions["passwords"]
    try:
        user = _store().create_user(username, passwords.hash(password))
    except UsernameTaken:
        raise click.ClickException(f"the username {username!r} is already registered") from None
    click.echo(f"created user {user.id} {user.username}")


@users.command("list")
def list_users() -> None:
    """List every user: id, status (active or disabled) and name."""
    rows = _store().list_users()
    click.echo(f"{'id':>6}  {'status':<8}  username")
    for user, disabled in rows:
        click.echo(f"{user.id:>6}  {'disabled' if disabled else 'active':<8}  {user.username}")


def _set_disabled(username: str, disabled: bool) -> User:
    """Disable or enable USERNAME; the user, or a ClickException when it is gone meanwhile."""
    user = _user(username)
    if not _store().set_disabled(user.id, disabled):
        raise click.ClickException(f"no user named {username!r}")
    return user


@users.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable USERNAME: its sessions end at once and it cannot sign in until enabled."""
    user = _set_disabled(username, True)
    click.echo(f"disabled user {user.id} {user.username}; its sessions have ended")


@users.command("enable")
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable USERNAME again: it can sign in with its password."""
    user = _set_disabled(username, False)
    click.echo(f"enabled user {user.id} {user.username}")


@users.command("delete")
@click.argument("username")
@click.confirmation_option(prompt="Delete the user and its sessions for good?")
def delete_user(username: str) -> None:
    """Delete USERNAME, its sessions and its failed-login records (asks first; --yes does not)."""
    from .routes.auth import forget_login_failures_of  # noqa: PLC0415 - the route's own clean-up

    user = _user(username)
    if not _store().delete_user(user.id):
        raise click.ClickException(f"no user named {username!r}")
    forget_login_failures_of(user.username)
    click.echo(f"deleted user {user.id} {user.username}")


# ------------------------------------------------------------------------------------------------ sessions


@sessions.command("revoke")
@click.argument("username")
def revoke_sessions(username: str) -> None:
    """End every session of USERNAME: its access and refresh tokens get 401 from now on."""
    user = _user(username)
    ended = _store().end_sessions_of(user.id)
    click.echo(f"ended {ended} session{'' if ended == 1 else 's'} of {user.username}")


# ------------------------------------------------------------------------------------------------ keys


@keys.command("rotate")
def rotate_key() -> None:
    """Print a new signing key and the steps that switch to it without signing anyone out."""
    settings: Settings = current_app.config["SETTINGS"]
    key = secrets.token_urlsafe(48)
    click.echo(key)
    click.echo(
        "\nThe line above is a new signing key; it is shown once and written nowhere. On every instance, "
        "at once:\n"
        "  1. SECRET_KEY_PREVIOUS = the current SECRET_KEY (tokens it signed keep working);\n"
        "  2. SECRET_KEY = the new key (new tokens are signed with it);\n"
        "  3. restart or roll out;\n"
        f"  4. after JWT_EXPIRES_SECONDS ({settings.jwt_expires_seconds} s), unset SECRET_KEY_PREVIOUS and "
        "roll out again.\n"
        "Kubernetes: docs/security.md#rotating-the-signing-key.",
        err=True,
    )


# ------------------------------------------------------------------------------------------------ config


def _shown(name: str, value: object) -> str:
    if name in SECRET_SETTINGS:
        return "set" if value else "unset"
    if name == "database_url" and isinstance(value, str):
        parts = urlsplit(value)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[1]
            return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "-"
    return "-" if value is None else str(value)


@config.command("check")
def check_config() -> None:
    """Read the settings as the service would (environment and .env) and print them, secrets masked.

    Exits 4 with one line naming the variable when a setting is invalid.
    """
    load_env_file()
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        click.echo(f"Invalid configuration: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT_CODE)
    for field in dataclasses.fields(settings):
        click.echo(f"{field.name.upper()}={_shown(field.name, getattr(settings, field.name))}")
    store = "postgresql" if settings.database_url else f"json file {settings.data_file_path}"
    click.echo(f"configuration is valid (store: {store})", err=True)


# ------------------------------------------------------------------------------------------------ migrate


@click.command("migrate")
@click.option("--rollback-to", "version", default="", help="Undo the versions applied after this one.")
def migrate_command(version: str) -> None:
    """Migrate the PostgreSQL schema (python -m src.migrate): the same steps, exit codes and line."""
    from .migrate import migrate  # noqa: PLC0415 - the migrations' helpers, for this command only

    code, line = migrate(os.environ, rollback_to_version=version)
    click.echo(line, err=bool(code))
    sys.exit(code)


def init_app(app: Flask) -> None:
    """Register the operator commands on ``flask --app src``."""
    for group in (users, sessions, keys, config):
        app.cli.add_command(group)
    app.cli.add_command(migrate_command)

"""Password hashing, the JWT signing key, token checks, security headers and CORS."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
import tempfile
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, Response
from flask_cors import CORS
from flask_jwt_extended import JWTManager, create_access_token

from .config import SECRET_KEY_MIN_BYTES, ConfigError, Settings
from .errors import Unauthorized, error_response
from .storage import User, UserStore

log = logging.getLogger(__name__)

SECRET_KEY_SUFFIX = ".secret_key"  # noqa: S105 - a file name suffix, not a secret
# Ids are positive integers; anything else in ``sub`` names no user.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
)


# ------------------------------------------------------------------------------------------------ passwords


class Passwords:
    """argon2id hashing with the configured cost, and verification that costs the same for unknown users."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Verified against when the user does not exist, so that "unknown user" and "wrong password" take the
        # same time and give the same answer.
        self.dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (salted, self-describing)."""
        return self.hasher.hash(password)

    def verify(self, user: User | None, password: str) -> bool:
        """Whether ``password`` is the user's; always spends one argon2 verification."""
        stored_hash = user.password_hash if user is not None else self.dummy_hash
        try:
            return self.hasher.verify(stored_hash, password) and user is not None
        except (VerificationError, InvalidHashError):
            return False


# ------------------------------------------------------------------------------------------------ JWT key


def secret_key_path(data_file_path: str) -> str:
    """Where the generated key is kept: beside the data file, ``<data file>.secret_key``."""
    return os.path.abspath(data_file_path) + SECRET_KEY_SUFFIX


def _read_secret_key(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        key = file.read().strip()
    if len(key.encode()) < SECRET_KEY_MIN_BYTES:
        raise ConfigError(
            f"SECRET_KEY file {path} is shorter than {SECRET_KEY_MIN_BYTES} bytes: "
            "delete it, or set SECRET_KEY yourself"
        )
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("SECRET_KEY file %s is readable by others (mode %o): chmod 600 it", path, mode)
    return key


def load_or_create_secret_key(data_file_path: str) -> str:
    """The key persisted beside the data file, generated on first start.

    Several workers start at once: each writes a complete candidate to a temp file (mode 0600) and tries to
    ``os.link`` it to the final name. Linking fails when the name exists, so exactly one candidate wins and
    every worker then reads that one; no worker can see a half-written key.
    """
    path = secret_key_path(data_file_path)
    try:
        return _read_secret_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"SECRET_KEY is unset and {path} cannot be read: {exc.strerror}") from exc
    folder = os.path.dirname(path)
    temp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".new-")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp_path, path)
            created = True
        except FileExistsError:
            created = False
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder_fd)  # the new name survives a power cut
        finally:
            os.close(folder_fd)
        key = _read_secret_key(path)
    except OSError as exc:
        raise ConfigError(
            f"SECRET_KEY is unset and a generated key cannot be stored in {path}: {exc.strerror}"
        ) from exc
    finally:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
    if created:
        log.warning(
            "SECRET_KEY is not set: generated a signing key in %s (mode 0600); keep it with the data file, "
            "or set SECRET_KEY",
            path,
        )
    return key


def signing_key(settings: Settings) -> str:
    """SECRET_KEY when set, else the key persisted beside the JSON data file."""
    if settings.secret_key:
        return settings.secret_key
    if settings.database_url:  # Settings.from_env refuses this; a Settings built by hand may not
        raise ConfigError("SECRET_KEY must be set when DATABASE_URL is set")
    return load_or_create_secret_key(settings.data_file_path)


def issue_token(user: User) -> str:
    """A signed access token whose ``sub`` is the user's id as a string."""
    return create_access_token(identity=str(user.id))


# ------------------------------------------------------------------------------------------------ wiring


def _init_jwt(app: Flask, settings: Settings, store: UserStore) -> None:
    # JWT_SECRET_KEY only: Flask's SECRET_KEY would make Flask build a session serializer on every request.
    app.config.update(
        JWT_SECRET_KEY=signing_key(settings),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_HEADER_NAME="Authorization",
        JWT_HEADER_TYPE="Bearer",
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.jwt_expires_seconds),
        JWT_COOKIE_CSRF_PROTECT=False,  # tokens travel in headers only: no CSRF claim needed
    )
    jwt = JWTManager(app)

    @jwt.user_lookup_loader
    def load_user(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        subject = payload.get("sub")
        if not isinstance(subject, str) or not _USER_ID.fullmatch(subject):
            return None
        return store.find_by_id(int(subject))

    def rejected(detail: str) -> Response:
        return error_response(Unauthorized(detail))

    jwt.unauthorized_loader(
        lambda _reason: rejected("A bearer token is required: Authorization: Bearer <token>.")
    )
    jwt.invalid_token_loader(lambda _reason: rejected("The bearer token is invalid."))
    jwt.expired_token_loader(lambda _header, _payload: rejected("The bearer token has expired."))
    jwt.revoked_token_loader(lambda _header, _payload: rejected("The bearer token has been revoked."))
    jwt.needs_fresh_token_loader(lambda _header, _payload: rejected("A fresh bearer token is required."))
    jwt.token_verification_failed_loader(lambda _header, _payload: rejected("The bearer token is invalid."))
    jwt.user_lookup_error_loader(
        lambda _header, _payload: rejected("The user of this token no longer exists.")
    )


class SecurityHeaders:
    """WSGI middleware: the security headers, and ``Cache-Control: no-store`` unless the route chose one.

    Appended to the plain header list at ``start_response``: cheaper on every request than an
    ``after_request`` hook going through werkzeug's Headers, and it covers every response, errors included.
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start_response_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            # Tokens and per-user answers must never sit in a shared cache.
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", "no-store"))
            headers.extend(SECURITY_HEADERS)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_response_with_headers)


def init_app(app: Flask, settings: Settings, store: UserStore) -> None:
    """Password hashing, JWT, security headers, and CORS for the configured origins only."""
    app.extensions["passwords"] = Passwords(settings)
    _init_jwt(app, settings, store)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]
    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID"],
            supports_credentials=False,
            max_age=600,
        )

"""Registration and password authentication (with the failed-login limit), which starts a session."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest

from ..errors import InvalidRequest, TooManyRequests, Unauthorized, UnsupportedMediaType
from ..security import start_session
from ..storage import User, UsernameTaken

bp = Blueprint("auth", __name__)

# 1-64 of letters, digits, space, '.', '_', '-'; no space at either end; ASCII only, so that two names that
# look the same are the same name.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._-](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?")
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
FORM_MIMETYPE = "application/x-www-form-urlencoded"


def read_body() -> Mapping[str, Any]:
    """The request body as a mapping: a JSON object or a urlencoded form (empty when there is none)."""
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            body = request.get_json()
        except BadRequest:
            raise InvalidRequest("The body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object.")
        return body
    if mimetype == FORM_MIMETYPE:
        return request.form
    if not mimetype and not request.content_length and not request.get_data(cache=False):
        return {}
    raise UnsupportedMediaType(f"Send the body as application/json or {FORM_MIMETYPE}.")


def no_content() -> Response:
    """204 with no body and no Content-Type."""
    response = Response(status=HTTPStatus.NO_CONTENT)
    del response.headers["Content-Type"]
    return response


def text_field(body: Mapping[str, Any], name: str) -> str:
    """The string field ``name`` of ``body``; InvalidRequest when it is missing or not a string."""
    if name not in body:
        raise InvalidRequest(f"{name} is required.")
    value = body[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string.")
    return value


def check_new_password(password: str, name: str = "password") -> None:
    """InvalidRequest unless ``password`` has an accepted length (the rule of registration)."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise InvalidRequest(f"{name} must be {PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters long.")


def read_credentials() -> tuple[str, str]:
    """Username and password from the body, validated; InvalidRequest names the first bad field."""
    body = read_body()
    username = text_field(body, "username")
    password = text_field(body, "password")
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidRequest(
            "username must be 1-64 characters of letters, digits, space, '.', '_' or '-', "
            "and must not start or end with a space."
        )
    check_new_password(password)
    return username, password


@bp.post("/register")
def register():
    """Create a user: 201 with its id and name, 409 if the name is taken."""
    username, password = read_credentials()
    store = current_app.extensions["user_store"]
    # Checked first only to spare an argon2 hash; create_user enforces uniqueness atomically.
    if store.find_by_username(username) is not None:
        raise UsernameTaken(username)
    user = store.create_user(username, current_app.extensions["passwords"].hash(password))
    return {"id": user.id, "username": user.username}, HTTPStatus.CREATED


def login_failure_key(username: str) -> str:
    """Failed logins are counted per client address and username: one noisy client cannot lock a user out
    for everyone."""
    return f"{request.remote_addr or '-'}|{username}"


def check_password(username: str, user: User | None, password: str, refusal: str) -> None:
    """Verify ``password`` for ``user`` (None: unknown ``username``) under the failed-login limit.

    429 while the limit is reached, before any argon2 work, so that a flood of guesses costs the server
    nothing; 401 with ``refusal`` when wrong, counted as a failure; a success clears the count.
    """
    settings = current_app.config["SETTINGS"]
    store = current_app.extensions["user_store"]
    limit = settings.auth_max_failures
    window = settings.auth_failure_window_seconds
    key = login_failure_key(username)
    now = time.time()
    failures = 0
    if limit:
        failures, oldest = store.login_failures(key, now, window)
        if failures >= limit:
            wait = window if oldest is None else oldest + window - now
            raise TooManyRequests(
                "Too many failed attempts for this username from this address; try again later.",
                retry_after=max(1, math.ceil(wait)),
            )
    if not current_app.extensions["passwords"].verify(user, password) or user is None:
        if limit:
            store.record_login_failure(key, now, window)
        raise Unauthorized(refusal)
    if failures:
        store.clear_login_failures(key)


@bp.post("/authenticate")
def authenticate():
    """Exchange a username and password for an access token and a refresh token (a new session)."""
    username, password = read_credentials()
    store = current_app.extensions["user_store"]
    user = store.find_by_username(username)
    check_password(username, user, password, "Invalid username or password.")
    assert user is not None  # check_password refuses an unknown user  # noqa: S101
    passwords = current_app.extensions["passwords"]
    if passwords.needs_rehash(user.password_hash):
        # Hashes made with older argon2 parameters are upgraded while the password is at hand.
        upgraded = User(user.id, user.username, passwords.hash(password))
        if store.change_password(user.id, user.password_hash, upgraded.password_hash, end_sessions=False):
            user = upgraded
    return start_session(user)

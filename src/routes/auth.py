"""Registration and password authentication (which starts a session), with the failed-login and registration
limits.

Failed logins are counted in the store, shared by every worker and pod, under three keys: the pair (client
address, username), the username alone and the address alone. An attempt is counted *before* its password is
checked, in one atomic step with the check of the limits (``UserStore.reserve_attempt``), and taken back
when the password was right; concurrent guesses therefore never exceed a limit. Within the window
(AUTH_FAILURE_WINDOW_SECONDS):

* a pair gets AUTH_MAX_FAILURES attempts;
* once a username has AUTH_MAX_FAILURES_PER_USERNAME failures from any addresses, each address gets a single
  attempt at it: many addresses cannot multiply the guesses (each new one adds one), yet the owner, typing
  from an address that never failed, is never locked out by someone else;
* an address gets AUTH_MAX_FAILURES_PER_ADDRESS failures across all usernames (a spray over many names);
* an address gets REGISTER_MAX_PER_ADDRESS registrations.

The client address is the peer's, or X-Forwarded-For's when the peer is one of TRUSTED_PROXIES.
"""

from __future__ import annotations

import contextlib
import math
import time
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..apidoc import ok, operation, problem
from ..errors import Overloaded, TooManyRequests, Unauthorized
from ..schemas import Credentials, Token, accepts
from ..schemas import User as UserBody
from ..security import start_session
from ..storage import User, UsernameTaken
from ..storage.base import Counts

bp = Blueprint("auth", __name__)


def no_content() -> Response:
    """204 with no body and no Content-Type."""
    response = Response(status=HTTPStatus.NO_CONTENT)
    del response.headers["Content-Type"]
    return response


def _address() -> str:
    return request.remote_addr or "-"


def _retry_after(counts: Counts, index: int, now: float, window: float) -> int:
    oldest = counts[index][1]
    wait = window if oldest is None else oldest + window - now
    return max(1, math.ceil(wait))


@bp.post("/register")
@operation(
    "register",
    "auth",
    "Create a user",
    {
        201: ok("The user was created and stored.", UserBody),
        400: None,
        409: problem(409, "The username is taken."),
        413: None,
        415: None,
        429: None,
        503: None,
    },
)
@accepts(Credentials)
def register(credentials: Credentials):
    """Create a user: 201 with its id and name, 409 if the name is taken; 429 past the per-address limit."""
    username, password = credentials.username, credentials.password
    store = current_app.extensions["user_store"]
    passwords = current_app.extensions["passwords"]
    # The limit comes first and a 409 spends it as a 201 does: past the limit, a taken name and a free one get
    # the same 429, so that the answers cannot be used to list the names that exist.
    limit = current_app.config["SETTINGS"].register_max_per_address
    reserved = reserve_per_address(store, "register", limit, "Too many registrations from this address")
    # Checked before hashing only to spare an argon2 hash; create_user enforces uniqueness atomically.
    if store.find_by_username(username) is not None:
        raise UsernameTaken(username)
    with contextlib.ExitStack() as hashing:
        try:
            hashing.enter_context(passwords.slot())
        except Overloaded:
            if reserved is not None:  # shed before any work: the client's retry must not cost it twice
                store.release_attempt([_per_address_key("register")], reserved)
            raise
        user = store.create_user(username, passwords.hash(password))
    return {"id": user.id, "username": user.username}, HTTPStatus.CREATED


def _per_address_key(kind: str) -> str:
    return f"{kind}:{_address()}"


def reserve_per_address(store: Any, kind: str, limit: int, refusal: str) -> float | None:
    """Count one ``kind`` request of the client address within AUTH_FAILURE_WINDOW_SECONDS, in one atomic
    step with the check of ``limit`` (0: no limit); TooManyRequests with Retry-After past it. The time it was
    counted at, or None when there is no limit."""
    if not limit:
        return None
    now, window = time.time(), current_app.config["SETTINGS"].auth_failure_window_seconds
    recorded, counts = store.reserve_attempt(
        [_per_address_key(kind)], now, window, lambda counts: counts[0][0] < limit
    )
    if not recorded:
        retry_after = _retry_after(counts, 0, now, window)
        raise TooManyRequests(f"{refusal}; try again later.", retry_after=retry_after)
    return now


@bp.post("/authenticate")
@operation(
    "authenticate",
    "auth",
    "Exchange a username and password for an access token and a refresh token (a new session)",
    {
        200: ok(
            "A signed access token carrying the new session's id, and the session's first refresh token.",
            Token,
            headers=["Cache-Control"],
        ),
        400: None,
        401: problem(401, "Unknown user or wrong password (one answer for both)."),
        413: None,
        415: None,
        429: None,
        503: None,
    },
)
@accepts(Credentials)
def authenticate(credentials: Credentials):
    """Exchange a username and password for an access token and a refresh token (a new session)."""
    username, password = credentials.username, credentials.password
    store = current_app.extensions["user_store"]
    passwords = current_app.extensions["passwords"]
    with passwords.slot():
        user = verify_password(username, password, "Invalid username or password.")
        if passwords.needs_rehash(user.password_hash):
            # Hashes made with older argon2 parameters are upgraded while the password is at hand.
            upgraded = User(user.id, user.username, passwords.hash(password))
            if store.change_password(user.id, user.password_hash, upgraded.password_hash, end_sessions=False):
                user = upgraded
    return start_session(user)


def verify_password(username: str, password: str, refusal: str) -> User:
    """The user ``username`` when ``password`` is theirs, under the failed-login limits (see the module
    docstring); 401 with ``refusal`` otherwise. The caller holds a hashing slot."""
    settings = current_app.config["SETTINGS"]
    store = current_app.extensions["user_store"]
    passwords = current_app.extensions["passwords"]
    if not settings.auth_max_failures:
        user = store.find_by_username(username)
        if not passwords.verify(user, password) or user is None:
            raise Unauthorized(refusal)
        return user
    return _limited_login(settings, store, passwords, username, password, refusal=refusal)


def login_failure_keys(address: str, username: str) -> tuple[str, str, str]:
    """The keys failed logins are counted under: (address, username) pair, username, address."""
    return f"pair:{address}|{username}", f"user:{username}", f"addr:{address}"


def forget_login_failures_of(username: str) -> None:
    """Forget every failed login counted for ``username``: its own count and each (address, username) pair's
    (pair keys end with "|<username>", and neither an address nor a username holds a "|")."""
    _pair, by_username, _address = login_failure_keys("-", username)
    current_app.extensions["user_store"].forget_login_failures([by_username], "|" + username)


def _limited_login(
    settings: Any, store: Any, passwords: Any, username: str, password: str, *, refusal: str
) -> User:
    """The user when the password is right, under the failed-login limits (see the module docstring)."""
    address = _address()
    pair, by_username, by_address = login_failure_keys(address, username)
    per_pair = settings.auth_max_failures
    per_username = settings.auth_max_failures_per_username
    per_address = settings.auth_max_failures_per_address
    refused: list[int] = []

    def allow(counts: Counts) -> bool:
        (pair_failures, _), (username_failures, _), (address_failures, _) = counts
        if per_address and address_failures >= per_address:
            refused.append(2)
        elif per_username and username_failures >= per_username and pair_failures >= 1:
            refused.append(0)  # the username is under attack: one attempt per address
        elif pair_failures >= per_pair:
            refused.append(0)
        return not refused

    now, window = time.time(), settings.auth_failure_window_seconds
    recorded, counts = store.reserve_attempt([pair, by_username, by_address], now, window, allow)
    if not recorded:
        # Refused before any argon2 work, so that a flood of guesses costs the server nothing.
        raise TooManyRequests(
            "Too many failed attempts for this username or from this address; try again later.",
            retry_after=_retry_after(counts, refused[0], now, window),
        )
    user = store.find_by_username(username)
    if not passwords.verify(user, password) or user is None:
        raise Unauthorized(refusal)
    # The attempt was right: it is no failure, and the pair starts afresh.
    store.release_attempt([by_username, by_address], now)
    store.clear_login_failures(pair)
    return user

"""Sessions: refresh tokens rotated on every use, and logout.

A session starts at ``POST /authenticate``. ``POST /token/refresh`` spends the presented refresh token and
hands out a new pair; presenting a spent one again ends the whole session (RFC 9700, section 4.14.2), since
either the client or a thief holds a copy. ``POST /logout`` ends the session of the bearer token.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, request

from ..apidoc import ok, operation, problem
from ..errors import Unauthorized
from ..schemas import RefreshRequest, Token, accepts
from ..security import read_refresh_token, token_response
from ..storage import RefreshRefused
from .auth import no_content, reserve_per_address

bp = Blueprint("sessions", __name__)

_REFUSALS = {
    "unknown": "The refresh token is unknown or its session has ended.",
    "expired": "The refresh token has expired; authenticate again.",
    "reused": "The refresh token was already used; its session has ended. Authenticate again.",
}


@bp.post("/token/refresh")
@operation(
    "refreshToken",
    "auth",
    "Exchange a refresh token for a new access token and a new refresh token",
    {
        200: ok(
            "A new access token for the same session and the session's new refresh token.",
            Token,
            headers=["Cache-Control"],
        ),
        400: None,
        413: None,
        415: None,
        401: problem(
            401,
            "The refresh token is unknown, malformed, expired or spent (a spent one also ends its session).",
        ),
        429: None,
        503: None,
    },
    description="The presented refresh token is spent. Presenting a spent one answers 401 and ends its whole "
    "session (its newest refresh token and its access tokens stop working). Of concurrent refreshes with one "
    "token exactly one succeeds; the others present a spent token.",
)
@accepts(RefreshRequest)
def refresh(body: RefreshRequest):
    """Exchange a refresh token for a new access token and a new refresh token; the presented one is spent."""
    presented = body.refresh_token
    settings = current_app.config["SETTINGS"]
    store = current_app.extensions["user_store"]
    # Each refresh is a synced write and needs no password: one address gets a bounded number, tokens right
    # or wrong, so that a flood can neither grind the store nor try tokens at will.
    reserve_per_address(
        store, "refresh", settings.refresh_max_per_address, "Too many token refreshes from this address"
    )
    # Checked before the sessions are touched: a token this service did not make is refused unread.
    named = read_refresh_token(current_app.extensions["access_tokens"].key, presented)
    if named is None:
        raise Unauthorized(_REFUSALS["unknown"])
    now = time.time()
    try:
        session = store.rotate_refresh_token(
            *named, now, settings.session_absolute_seconds, settings.session_idle_seconds
        )
    except RefreshRefused as refused:
        raise Unauthorized(_REFUSALS[refused.reason]) from None
    user = store.find_by_id(session.user_id)
    if user is None:
        raise Unauthorized(_REFUSALS["unknown"])
    return token_response(user, session, now)


@bp.post("/logout")
@operation(
    "logout",
    "auth",
    "End the session of the bearer token",
    {204: ok("Done."), 401: None, 503: None},
    description="From the 204 on, the session's access and refresh tokens answer 401 on every worker and "
    "instance. Other sessions of the user keep working.",
    bearer=True,
)
def logout():
    """End the session of the bearer token: its access and refresh tokens are refused from now on."""
    _user, session_id = current_app.extensions["access_tokens"].check(request.headers.get("Authorization"))
    current_app.extensions["user_store"].end_session(session_id)
    return no_content()

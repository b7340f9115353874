"""Sessions: refresh tokens rotated on every use, and logout.

A session starts at ``POST /authenticate``. ``POST /token/refresh`` spends the presented refresh token and
hands out a new pair; presenting a spent one again ends the whole session (RFC 9700, section 4.14.2), since
either the client or a thief holds a copy. ``POST /logout`` ends the session of the bearer token.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, request

from ..errors import Unauthorized
from ..security import read_refresh_token, token_response
from ..storage import RefreshRefused
from .auth import no_content, read_body, reserve_per_address, text_field

bp = Blueprint("sessions", __name__)

_REFUSALS = {
    "unknown": "The refresh token is unknown or its session has ended.",
    "expired": "The refresh token has expired; authenticate again.",
    "reused": "The refresh token was already used; its session has ended. Authenticate again.",
}


@bp.post("/token/refresh")
def refresh():
    """Exchange a refresh token for a new access token and a new refresh token; the presented one is spent."""
    presented = text_field(read_body(), "refresh_token")
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
def logout():
    """End the session of the bearer token: its access and refresh tokens are refused from now on."""
    _user, session_id = current_app.extensions["access_tokens"].check(request.headers.get("Authorization"))
    current_app.extensions["user_store"].end_session(session_id)
    return no_content()

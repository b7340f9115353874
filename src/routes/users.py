"""Routes for the signed-in user: who they are, their password, their account."""

from flask import Blueprint, current_app

from ..errors import InvalidRequest, Unauthorized
from ..security import token_required
from ..storage import User
from .auth import (
    check_new_password,
    forget_login_failures_of,
    no_content,
    password_field,
    read_body,
    verify_password,
)
from .waits import reads_store

bp = Blueprint("users", __name__)


@bp.get("/id")
@reads_store
@token_required
def user_id(user: User):
    """The id of the user the token names."""
    return {"id": user.id}


@bp.get("/hello")
@reads_store
@token_required
def hello(user: User):
    """A greeting with the user's name capitalised ("alice" -> "Hello Alice")."""
    return {"message": "Hello " + user.username.capitalize()}


@bp.get("/users/me")
@reads_store
@token_required
def me(user: User):
    """The user the token names (never its password hash)."""
    return {"id": user.id, "username": user.username}


@bp.put("/users/me/password")
@token_required
def change_password(user: User):
    """Replace the password (the current one proves it is the user) and end every session of the user."""
    body = read_body()
    current_password = password_field(body, "current_password")
    new_password = password_field(body, "new_password")
    check_new_password(new_password, "new_password")
    store = current_app.extensions["user_store"]
    passwords = current_app.extensions["passwords"]
    with passwords.slot():
        # A wrong current password counts as a failed login of this user.
        current = verify_password(user.username, current_password, "The current password is wrong.")
        if current.id != user.id:  # the name now belongs to someone else: this token's user is gone
            raise Unauthorized("The user of this token no longer exists.")
        if new_password == current_password:
            raise InvalidRequest("new_password must differ from the current password.")
        new_hash = passwords.hash(new_password)
    if not store.change_password(current.id, current.password_hash, new_hash, end_sessions=True):
        # Changed or deleted by another request since the check: that one ended the sessions.
        raise Unauthorized("The password changed meanwhile; authenticate again.")
    return no_content()


@bp.delete("/users/me")
@token_required
def delete_me(user: User):
    """Delete the account, its sessions and its failed-login records; the password confirms it."""
    password = password_field(read_body(), "password")
    store = current_app.extensions["user_store"]
    with current_app.extensions["passwords"].slot():
        verify_password(user.username, password, "The password is wrong.")
    store.delete_user(user.id)
    forget_login_failures_of(user.username)
    return no_content()

"""Routes for the signed-in user: who they are, their password, their account."""

from flask import Blueprint, current_app

from ..apidoc import ok, operation, problem
from ..errors import InvalidRequest, Unauthorized
from ..schemas import Hello, Me, PasswordChange, PasswordConfirmation, UserId, accepts
from ..security import token_required
from ..storage import User
from .auth import forget_login_failures_of, no_content, verify_password
from .waits import reads_store

bp = Blueprint("users", __name__)


@bp.get("/id")
@reads_store
@operation(
    "getId",
    "users",
    "The id of the user the token names",
    {200: ok("The caller's id.", UserId), 401: None, 503: None},
    bearer=True,
)
@token_required
def user_id(user: User):
    """The id of the user the token names."""
    return {"id": user.id}


@bp.get("/hello")
@reads_store
@operation(
    "getHello",
    "users",
    "A greeting with the caller's name, capitalised",
    {200: ok("The greeting.", Hello), 401: None, 503: None},
    bearer=True,
)
@token_required
def hello(user: User):
    """A greeting with the user's name capitalised ("alice" -> "Hello Alice")."""
    return {"message": "Hello " + user.username.capitalize()}


@bp.get("/users/me")
@reads_store
@operation(
    "getMe",
    "users",
    "The user the token names",
    {200: ok("The caller's id and name.", Me), 401: None, 503: None},
    bearer=True,
)
@token_required
def me(user: User):
    """The user the token names (never its password hash)."""
    return {"id": user.id, "username": user.username}


@bp.put("/users/me/password")
@operation(
    "changePassword",
    "users",
    "Change the password and end every session of the user",
    {
        204: ok("Done."),
        400: None,
        413: None,
        415: None,
        401: problem(
            401, "The token is refused, or the current password is wrong (counted as a failed login)."
        ),
        429: None,
        503: None,
    },
    description="The new password follows the rule of registration and must differ from the current one. "
    "Afterwards every session of the user has ended, this one included: authenticate again with the new "
    "password.",
    bearer=True,
)
@token_required
@accepts(PasswordChange)
def change_password(user: User, change: PasswordChange):
    """Replace the password (the current one proves it is the user) and end every session of the user."""
    current_password, new_password = change.current_password, change.new_password
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
@operation(
    "deleteMe",
    "users",
    "Delete the account, its sessions and its failed-login records",
    {
        204: ok("Done."),
        400: None,
        413: None,
        415: None,
        401: problem(401, "The token is refused, or the password is wrong (counted as a failed login)."),
        429: None,
        503: None,
    },
    description="The password confirms the deletion. Afterwards every token of the user answers 401; the "
    "name may be registered again, under a new id.",
    bearer=True,
)
@token_required
@accepts(PasswordConfirmation)
def delete_me(user: User, confirmation: PasswordConfirmation):
    """Delete the account, its sessions and its failed-login records; the password confirms it."""
    password = confirmation.password
    store = current_app.extensions["user_store"]
    with current_app.extensions["passwords"].slot():
        verify_password(user.username, password, "The password is wrong.")
    store.delete_user(user.id)
    forget_login_failures_of(user.username)
    return no_content()

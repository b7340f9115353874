"""Routes for the signed-in user."""

from flask import Blueprint

from ..security import token_required
from ..storage import User

bp = Blueprint("users", __name__)


@bp.get("/id")
@token_required
def user_id(user: User):
    """The id of the user the token names."""
    return {"id": user.id}


@bp.get("/hello")
@token_required
def hello(user: User):
    """A greeting with the user's name capitalised ("alice" -> "Hello Alice")."""
    return {"message": "Hello " + user.username.capitalize()}

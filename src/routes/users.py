"""Routes for the signed-in user."""

from flask import Blueprint
from flask_jwt_extended import get_current_user, jwt_required

bp = Blueprint("users", __name__)


@bp.get("/id")
@jwt_required()
def user_id():
    """The id of the user the token names."""
    return {"id": get_current_user().id}


@bp.get("/hello")
@jwt_required()
def hello():
    """A greeting with the user's name capitalised ("alice" -> "Hello Alice")."""
    return {"message": "Hello " + get_current_user().username.capitalize()}

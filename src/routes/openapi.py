"""GET /openapi.json: the API description shipped in src/openapi.json, read once at startup."""

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app
from werkzeug.exceptions import NotFound

from ..apidoc import ok, operation
from .waits import waits_on_nothing

bp = Blueprint("openapi", __name__)

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


@bp.record_once
def _load_document(state) -> None:
    app: Flask = state.app
    try:
        app.extensions["openapi_document"] = DOCUMENT_PATH.read_bytes()
    except FileNotFoundError:
        app.extensions["openapi_document"] = None


@bp.get("/openapi.json")
@waits_on_nothing
@operation(
    "openapi", "health", "This description", {200: ok("The OpenAPI 3.1 document.", {"type": "object"})}
)
def openapi_document():
    """The OpenAPI 3.1 description of this API."""
    document = current_app.extensions["openapi_document"]
    if document is None:
        raise NotFound("No API description is installed.")
    return Response(document, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})

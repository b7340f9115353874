"""GET /docs: Swagger UI over /openapi.json, from the files the swagger-ui-py package ships (no CDN).

Registered only when API_DOCS_ENABLED is true. The page and its assets are read once at startup and served
from memory, so the routes run on the worker's event loop. They are left out of /openapi.json: a page for
people, not an operation of the API, and present only when the setting allows it.

The page's Content-Security-Policy allows what Swagger UI needs and no more: scripts and styles from this
origin (its settings are a static file, not an inline script), images from here and ``data:`` URLs (its
icons), and requests to this origin only ("try it out").
"""

import importlib.util
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import NotFound

from ..security import CONTENT_SECURITY_POLICY_ENVIRON
from .waits import waits_on_nothing

bp = Blueprint("docs", __name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
OWN_FILES = Path(__file__).resolve().parent.parent / "docs_ui"
# name -> (folder, media type): the page's own files, then Swagger UI's, nothing else from its folder.
ASSETS = {
    "swagger-initializer.js": (OWN_FILES, "text/javascript"),
    "swagger-ui-bundle.js": (None, "text/javascript"),
    "swagger-ui.css": (None, "text/css"),
    "favicon-32x32.png": (None, "image/png"),
}
_EXTENSION = "api_docs"


def swagger_ui_folder() -> Path:
    """The static folder of the installed swagger-ui-py package, found without importing it."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@bp.record_once
def _load_files(state) -> None:
    app: Flask = state.app
    vendor = swagger_ui_folder()
    app.extensions[_EXTENSION] = {
        "": ((OWN_FILES / "index.html").read_bytes(), "text/html"),
        **{
            name: (((folder or vendor) / name).read_bytes(), media_type)
            for name, (folder, media_type) in ASSETS.items()
        },
    }


def _answer(name: str, cache_control: str) -> Response:
    found = current_app.extensions[_EXTENSION].get(name)
    if found is None:
        raise NotFound()
    body, media_type = found
    request.environ[CONTENT_SECURITY_POLICY_ENVIRON] = CONTENT_SECURITY_POLICY
    return Response(body, mimetype=media_type, headers={"Cache-Control": cache_control})


@bp.get("/docs")
@waits_on_nothing
def docs_page():
    """Swagger UI showing /openapi.json, with "try it out" against this server."""
    return _answer("", "no-cache")


@bp.get("/docs/<name>")
@waits_on_nothing
def docs_asset(name: str):
    """One of the page's scripts, styles or icons."""
    return _answer(name, "public, max-age=3600")

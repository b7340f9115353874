"""The one error path: every exception becomes an RFC 9457 ``application/problem+json`` response.

Routes raise (``ApiError`` subclasses, storage errors, werkzeug's HTTP exceptions); only this module builds
error bodies. No HTML page and no traceback ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from http import HTTPStatus

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .storage import StoreUnavailable, UsernameTaken

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
# Bearer challenge (RFC 6750) on every 401.
BEARER_CHALLENGE = (("WWW-Authenticate", "Bearer"),)
# How long a client should wait before retrying when the store is down.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error the client caused or must hear about; mapped to its status with ``detail`` as the body."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, detail: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = tuple(headers)


class InvalidRequest(ApiError):
    """400: a field is missing, mistyped or invalid, or the body cannot be read."""


class Unauthorized(ApiError):
    """401: no valid credentials; carries the Bearer challenge."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, detail: str) -> None:
        super().__init__(detail, BEARER_CHALLENGE)


class UnsupportedMediaType(ApiError):
    """415: the body is neither JSON nor a form."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class TooManyRequests(ApiError):
    """429: too many failed attempts; ``Retry-After`` says when to try again."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, (("Retry-After", str(retry_after)),))


class ServiceUnavailable(ApiError):
    """503: the service cannot answer now (store down, process draining)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail, (("Retry-After", str(UNAVAILABLE_RETRY_AFTER_SECONDS)),))


class Overloaded(TooManyRequests):
    """503: this process is at its bound of concurrent password hashes; ``Retry-After`` says when to retry."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


def problem(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """An ``application/problem+json`` response; ``type`` is about:blank, so ``title`` is the HTTP phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    response.headers.extend(headers)
    return response


def error_response(error: ApiError) -> Response:
    """The problem+json response for an ApiError."""
    return problem(error.status, error.detail, error.headers)


# Headers of werkzeug's error responses that a problem response keeps (Allow on 405, Retry-After on 503).
_KEPT_HEADERS = frozenset({"allow", "retry-after", "www-authenticate"})


# Plainer words than werkzeug's defaults for the errors every client meets.
_DETAILS: dict[int, str] = {
    HTTPStatus.NOT_FOUND: "Nothing is served at this path.",
    HTTPStatus.METHOD_NOT_ALLOWED: "This path does not accept this method; see the Allow header.",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The request body is larger than this service accepts.",
}


def _http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = [(name, value) for name, value in error.get_headers() if name.lower() in _KEPT_HEADERS]
    if status == HTTPStatus.UNAUTHORIZED and not headers:
        headers.extend(BEARER_CHALLENGE)
    if status >= 500:
        # werkzeug's 500 text may describe the failure; the client gets a fixed sentence only.
        return problem(status, "The server could not complete the request.", headers)
    detail = error.description or "The request failed."
    if detail == type(error).description:  # werkzeug's generic text, not one a route chose
        detail = _DETAILS.get(status, detail)
    return problem(status, detail, headers)


def _username_taken(_error: UsernameTaken) -> Response:
    return problem(HTTPStatus.CONFLICT, "This username is already registered.")


def _store_unavailable(error: StoreUnavailable) -> Response:
    # The store logs the reason (a path, a database error); clients get a stable sentence.
    log.debug("store unavailable: %s", error)
    return error_response(ServiceUnavailable("The user store is unavailable; try again later."))


def _unexpected(error: Exception) -> Response:
    log.error("unhandled error while answering a request", exc_info=error)
    return problem(HTTPStatus.INTERNAL_SERVER_ERROR, "The server could not complete the request.")


def init_app(app: Flask) -> None:
    """Register the handlers that turn every exception into problem+json."""
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(UsernameTaken, _username_taken)
    app.register_error_handler(StoreUnavailable, _store_unavailable)
    app.register_error_handler(Exception, _unexpected)

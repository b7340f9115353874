"""The OpenAPI 3.1 document, built from the routes: their ``operation`` metadata (summary, statuses, headers),
the pydantic models they validate request bodies with (``schemas.accepts``) and the response models.

``make openapi`` (tools/openapi.py) writes it to src/openapi.json, which GET /openapi.json serves and
Schemathesis reads; tests/test_openapi.py fails while the committed file differs from what the code builds.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from . import schemas

DOCUMENT_PATH = Path(__file__).resolve().parent / "openapi.json"
OPERATION = "flask_api_operation"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
# Routes with no place in the document: /docs is a page for people over it (docs/api.md).
UNDOCUMENTED_BLUEPRINTS = ("docs.",)

_REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"

HEADER: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "flask-api",
        "version": "1.0.0",
        "summary": "Users register, authenticate with a password and call JWT-protected routes.",
        "description": "Every error is an RFC 9457 `application/problem+json` document. Every response "
        "carries `X-Request-ID`. Protected routes take `Authorization: Bearer <access_token>` from "
        "`POST /authenticate`.",
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "servers": [{"url": "http://127.0.0.1:8888", "description": "make run"}],
    "tags": [
        {"name": "auth", "description": "Registration and tokens"},
        {"name": "users", "description": "Routes that need a token"},
        {"name": "health", "description": "Probes, metrics and this description"},
    ],
}

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "HS256 access token from POST /authenticate.",
    }
}

PARAMETERS = {
    "XRequestIdIn": {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Correlation id to reuse (1-128 of A-Z a-z 0-9 . _ : -); anything else is replaced.",
        "schema": {"type": "string", "pattern": _REQUEST_ID_PATTERN},
    }
}


def _header(description: str, pattern: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string", "pattern": pattern}}


HEADERS = {
    "XRequestId": _header(
        "Id of this request: the caller's X-Request-ID when it is valid, else a new one.", _REQUEST_ID_PATTERN
    ),
    "WWWAuthenticate": _header("Bearer challenge (RFC 6750).", "^Bearer"),
    "RetryAfter": _header("Seconds to wait before trying again.", "^[0-9]+$"),
    "CacheControlNoStore": _header("Tokens are never cached.", "no-store"),
}
# The response headers a status always carries besides X-Request-ID (src/errors.py sets them).
_STATUS_HEADERS = {401: ("WWW-Authenticate",), 429: ("Retry-After",), 503: ("Retry-After",)}
_HEADER_COMPONENTS = {
    "X-Request-ID": "XRequestId",
    "WWW-Authenticate": "WWWAuthenticate",
    "Retry-After": "RetryAfter",
    "Cache-Control": "CacheControlNoStore",
}


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"$ref": f"#/components/headers/{_HEADER_COMPONENTS[name]}"}
        for name in ("X-Request-ID", *names)
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def ok(
    description: str,
    body: type[BaseModel] | dict[str, Any] | None = None,
    *,
    media_type: str = JSON,
    headers: Iterable[str] = (),
) -> dict[str, Any]:
    """A success response: ``body`` a response model or a literal schema (None: no body, as a 204)."""
    response: dict[str, Any] = {"description": description, "headers": _headers(headers)}
    if body is not None:
        schema = body if isinstance(body, dict) else _ref(body)
        response["content"] = {media_type: {"schema": schema}}
    return response


def problem(status: int, description: str) -> dict[str, Any]:
    """An error response described for this route alone (the shared ones are named in ``RESPONSES``)."""
    return {
        "description": description,
        "headers": _headers(_STATUS_HEADERS.get(status, ())),
        "content": {PROBLEM: {"schema": _ref(schemas.Problem)}},
    }


RESPONSES = {
    "BadRequest": problem(400, "A field is missing, mistyped or invalid, or the body is not readable."),
    "Unauthorized": problem(
        401,
        "The token is missing, malformed, badly signed, expired, names a user that no longer exists, or "
        "belongs to a session that has ended (logout, password change, reuse of a spent refresh token).",
    ),
    "NotFound": problem(404, "Nothing is served at this path."),
    "PayloadTooLarge": problem(413, "The body is larger than MAX_CONTENT_LENGTH."),
    "UnsupportedMediaType": problem(
        415, "The body is neither application/json nor application/x-www-form-urlencoded."
    ),
    "TooManyRequests": problem(
        429,
        "Too many failed logins for this client address and username, for this username from any addresses, "
        "or from this address across usernames; or too many registrations or token refreshes from this "
        "address, inside the window.",
    ),
    "Unavailable": problem(
        503,
        "The store cannot be used now (database down, disk full, read-only, corrupt data file), the process "
        "is draining, or it is already checking as many passwords as it allows (ARGON2_CONCURRENCY).",
    ),
}
# The shared error responses by status; a route names the statuses it answers with.
SHARED = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 413: "PayloadTooLarge"}
SHARED |= {415: "UnsupportedMediaType", 429: "TooManyRequests", 503: "Unavailable"}
# Every route that reads a body answers these besides its own statuses.
BODY_ERRORS = (400, 413, 415)


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict[int, dict[str, Any] | None],
    *,
    description: str | None = None,
    bearer: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route decorator: the route's entry in the OpenAPI document. A status mapped to None is one of the
    shared error responses (``SHARED``). The route runs unchanged."""
    described: dict[str, Any] = {"tags": [tag], "operationId": operation_id, "summary": summary}
    if description:
        described["description"] = description
    if bearer:
        described["security"] = [{"bearerAuth": []}]
    described["responses"] = {
        str(status): {"$ref": f"#/components/responses/{SHARED[status]}"} if response is None else response
        for status, response in responses.items()
    }
    described["parameters"] = [{"$ref": "#/components/parameters/XRequestIdIn"}]

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, OPERATION, described)
        return view

    return decorate


class _DocumentSchema(GenerateJsonSchema):
    """pydantic's JSON Schema without the titles it derives from class and field names, nor defaults (the
    document describes bodies, not how the models fill them)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: Any) -> Any:
        generated = super().model_schema(schema)
        generated.pop("title", None)
        return generated

    def default_schema(self, schema: Any) -> Any:
        return self.generate_inner(schema["schema"])


RESPONSE_MODELS = (
    schemas.Problem,
    schemas.User,
    schemas.UserId,
    schemas.Token,
    schemas.Hello,
    schemas.Status,
    schemas.Me,
)


def _component_schemas(request_models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [*request_models, *RESPONSE_MODELS]
    _, generated = models_json_schema(
        [(model, "validation") for model in dict.fromkeys(models)],
        ref_template="#/components/schemas/{model}",
        schema_generator=_DocumentSchema,
    )
    return generated["$defs"]


# The order of an operation's fields in the document.
_OPERATION_KEYS = (
    "tags",
    "operationId",
    "summary",
    "description",
    "security",
    "requestBody",
    "responses",
    "parameters",
)


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes, grouped by tag in the order of ``HEADER``."""
    tag_order = [tag["name"] for tag in HEADER["tags"]]
    found: list[tuple[int, int, str, str, dict[str, Any]]] = []
    request_models: list[type[BaseModel]] = []
    for index, rule in enumerate(app.url_map.iter_rules()):
        if rule.endpoint.startswith(UNDOCUMENTED_BLUEPRINTS):
            continue
        view = app.view_functions[rule.endpoint]
        described = getattr(view, OPERATION, None)
        if described is None:
            raise LookupError(f"route {rule.rule} ({rule.endpoint}) has no @operation")
        described = dict(described)
        model = getattr(view, schemas.REQUEST_MODEL, None)
        if model is not None:
            request_models.append(model)
            content = {media_type: {"schema": _ref(model)} for media_type in (JSON, FORM)}
            described = {**described, "requestBody": {"required": True, "content": content}}
            described = {key: described[key] for key in _OPERATION_KEYS if key in described}
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<{argument}>", f"{{{argument}}}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((tag_order.index(described["tags"][0]), index, path, method.lower(), described))
    paths: dict[str, dict[str, Any]] = {}
    for _tag, _index, path, method, described in sorted(found, key=lambda entry: entry[:2]):
        paths.setdefault(path, {})[method] = described
    return {
        **HEADER,
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": RESPONSES,
            "schemas": _component_schemas(request_models),
        },
    }


def render(document: dict[str, Any]) -> str:
    """The document as src/openapi.json holds it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def documentation_app(folder: Path) -> Flask:
    """The app with every route the document describes, on a throwaway JSON store in ``folder``."""
    from . import create_app  # noqa: PLC0415 - this module is imported while the app is built

    return create_app({"DATA_FILE_PATH": str(folder / "data.json"), "SECRET_KEY": secrets.token_hex(32)})

"""The request and response bodies of the API, as pydantic models: one source for validating requests and for
the schemas of the OpenAPI document (src/apidoc.py).

Request models are validated with ``parse_body`` (or the ``accepts`` route decorator); a refusal becomes a
problem+json 400 naming the first bad field, in the order a person reads the body: every missing or
mistyped field first, then the first field whose value breaks its rule. Unknown fields are ignored.
Response models only describe what the routes return; they are not run on each response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from flask import current_app, request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from .errors import InvalidRequest, UnsupportedMediaType

# ------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Refusal:
    """The detail of a 400 for a value that breaks its field's rule; ``{name}`` is the field's name."""

    detail: str


USERNAME_RULE = (
    "{name} must be 1-64 characters of letters, digits, space, '.', '_' or '-', "
    "and must not start or end with a space."
)
# ASCII only, so that two names that look the same are the same name. pydantic runs the pattern as a search
# (Rust's regex: "$" is the end of the text, never before a final newline), hence the anchors.
Username = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-](?:[A-Za-z0-9 ._-]*[A-Za-z0-9._-])?$",
        description="Letters, digits, space, '.', '_', '-'; no leading or trailing space.",
        examples=["alice"],
    ),
    Refusal(USERNAME_RULE),
]


def _unicode_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800", which JSON can spell but UTF-8 cannot
        raise PydanticCustomError("string_unicode", "Input should be Unicode text") from None
    return value


# A password checked against a stored hash: any text UTF-8 can encode (argon2 hashes the UTF-8 bytes).
Password = Annotated[StrictStr, AfterValidator(_unicode_text)]
# A password that may be set: the rule of registration.
NewPassword = Annotated[
    Password,
    Field(min_length=8, max_length=128, examples=["correct horse"]),
    Refusal("{name} must be 8-128 characters long."),
]


def _any_string(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return value


# A string taken as it comes, lone surrogates included: a refresh token the service did not make is a 401
# (POST /token/refresh), whatever its characters.
OpaqueString = Annotated[str, PlainValidator(_any_string), WithJsonSchema({"type": "string"})]


# ------------------------------------------------------------------------------------------------ requests


class Credentials(BaseModel):
    """Body of POST /register and POST /authenticate."""

    username: Username
    password: NewPassword


class RefreshRequest(BaseModel):
    """Body of POST /token/refresh."""

    refresh_token: OpaqueString


class PasswordChange(BaseModel):
    """Body of PUT /users/me/password."""

    current_password: Password
    new_password: NewPassword


class PasswordConfirmation(BaseModel):
    """Body of DELETE /users/me."""

    password: Password


Body = TypeVar("Body", bound=BaseModel)

# ------------------------------------------------------------------------------------------------ responses


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(json_schema_extra={"format": "uri-reference"})
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = ""


class User(BaseModel):
    """A user as POST /register answers it."""

    id: int = Field(ge=1)
    username: Username


class UserId(BaseModel):
    """Answer of GET /id."""

    id: int = Field(ge=1)


class Token(BaseModel):
    """Answer of POST /authenticate and POST /token/refresh."""

    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=1)
    refresh_token: str = Field(
        pattern=r"^[A-Za-z0-9_-]{22}\.[1-9][0-9]{0,17}\.[A-Za-z0-9_-]{43}$",
        description="Opaque to the client (its session, its generation and a MAC). "
        "Spent by its first use at POST /token/refresh.",
    )
    refresh_expires_in: int = Field(
        ge=0,
        description="Seconds until the refresh token expires: the sooner of the session's absolute limit and "
        "its idle limit.",
    )


class Hello(BaseModel):
    """Answer of GET /hello."""

    message: str = Field(pattern="^Hello ")


class Status(BaseModel):
    """Answer of the probes."""

    status: str


class Me(BaseModel):
    """Answer of GET /users/me: never more than the id and the name."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    username: Username


# ------------------------------------------------------------------------------------------------ validation

FORM_MIMETYPE = "application/x-www-form-urlencoded"


def _check_streamed_length() -> None:
    """413 for a body sent without Content-Length (chunked) that goes past MAX_CONTENT_LENGTH.

    werkzeug stops reading such a body at the limit without a word; one more byte from the server's stream
    tells a body of exactly the limit from a longer one.
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if (
        request.content_length is None
        and len(request.get_data(cache=True)) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()


def read_body() -> Mapping[str, Any]:
    """The request body as a mapping: a JSON object or a urlencoded form (empty when there is none)."""
    _check_streamed_length()
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            body = request.get_json()
        except BadRequest:
            raise InvalidRequest("The body is not valid JSON.") from None
        except RecursionError:
            raise InvalidRequest("The body is nested too deeply.") from None
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object.")
        return body
    if mimetype == FORM_MIMETYPE:
        return request.form  # a MultiDict: pydantic reads the first value of each field, as [] does
    if not mimetype and not request.content_length and not request.get_data(cache=False):
        return {}
    raise UnsupportedMediaType(f"Send the body as application/json or {FORM_MIMETYPE}.")


# Errors that say a field is absent or not a string: reported before any rule a value breaks.
_NOT_GIVEN = frozenset({"missing", "string_type"})


def _refusal(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0])
    kind = error["type"]
    if kind == "missing":
        return f"{name} is required."
    if kind == "string_type":
        return f"{name} must be a string."
    if kind == "string_unicode":
        return f"{name} must be Unicode text (it holds an unpaired surrogate)."
    for rule in model.model_fields[name].metadata:
        if isinstance(rule, Refusal):
            return rule.detail.format(name=name)
    return f"{name} is invalid."


def parse_body(model: type[Body], body: Mapping[str, Any]) -> Body:
    """``body`` validated as ``model``; InvalidRequest naming the first bad field (module docstring)."""
    try:
        return model.model_validate(body)
    except ValidationError as invalid:
        errors = invalid.errors(include_url=False, include_context=False, include_input=False)
        first = min(errors, key=lambda error: error["type"] not in _NOT_GIVEN)  # min is stable: field order
        raise InvalidRequest(_refusal(model, first)) from None


REQUEST_MODEL = "flask_api_request_model"


def accepts(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Route decorator: the request body (JSON or form) validated as ``model`` is the view's last argument.

    Placed under ``token_required``, so that a request without a valid token gets its 401 before any 400.
    The OpenAPI document takes the route's request body schema from ``model``.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            return view(*args, parse_body(model, read_body()), **kwargs)

        setattr(validated, REQUEST_MODEL, model)
        return validated

    return decorate

"""Signing-key rotation with both stores: tokens name their key (``kid``), the service signs with SECRET_KEY
and verifies with it or SECRET_KEY_PREVIOUS, so a rotation signs nobody out; a removed or unknown key is 401.
Each "instance" is an app built from the same store with the settings of one step of the rotation."""

from __future__ import annotations

import time

import jwt
import pytest

from src.config import ConfigError, Settings
from tests.conftest import AuthActions, assert_problem

OLD_KEY = "old-signing-key-0123456789abcdef-0123456789abcdef"
NEW_KEY = "new-signing-key-0123456789abcdef-0123456789abcdef"
NEWER_KEY = "newer-signing-key-0123456789abcdef-0123456789abcd"


def hello(app, token: str):
    return app.test_client().get("/hello", headers={"Authorization": f"Bearer {token}"})


def header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_tokens_name_their_signing_key_and_a_new_key_gets_a_new_name(make_app):
    before = AuthActions(make_app(SECRET_KEY=OLD_KEY).test_client()).token()
    after = AuthActions(make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY).test_client()).token()

    assert header(before)["alg"] == "HS256"
    assert len(header(before)["kid"]) == 16
    assert header(after)["kid"] != header(before)["kid"]
    assert OLD_KEY not in before


def test_a_token_signed_before_the_rotation_works_after_it(make_app):
    token = AuthActions(make_app(SECRET_KEY=OLD_KEY).test_client()).token()

    rotated = make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY)

    assert hello(rotated, token).get_json() == {"message": "Hello Alice"}
    new_token = AuthActions(rotated.test_client()).authenticate().get_json()["access_token"]
    assert jwt.decode(new_token, NEW_KEY, algorithms=["HS256"])["sub"] == "1"  # signed with the new key


def test_a_token_signed_with_a_removed_key_returns_401(make_app):
    token = AuthActions(make_app(SECRET_KEY=OLD_KEY).test_client()).token()
    assert hello(make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY), token).status_code == 200

    assert_problem(hello(make_app(SECRET_KEY=NEWER_KEY, SECRET_KEY_PREVIOUS=NEW_KEY), token), 401)
    assert_problem(hello(make_app(SECRET_KEY=NEW_KEY), token), 401)


def test_a_token_of_the_previous_key_stops_at_its_expiry(make_app):
    old = make_app(SECRET_KEY=OLD_KEY)
    token = AuthActions(old.test_client()).token()
    now = int(time.time())
    expired = jwt.encode(
        {**claims(token), "iat": now - 120, "nbf": now - 120, "exp": now - 60},
        OLD_KEY,
        algorithm="HS256",
        headers={"kid": header(token)["kid"]},
    )

    body = assert_problem(hello(make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY), expired), 401)
    assert body["detail"] == "The bearer token has expired."


@pytest.mark.parametrize("kid", ["unknown-key-id00", None])
def test_a_token_with_an_unknown_or_no_kid_returns_401_even_when_its_signature_is_good(make_app, kid):
    app = make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY)
    token = AuthActions(app.test_client()).token()
    headers = {} if kid is None else {"kid": kid}
    forged = jwt.encode(claims(token), NEW_KEY, algorithm="HS256", headers=headers)

    assert hello(app, token).status_code == 200
    assert_problem(hello(app, forged), 401)


def test_a_token_whose_kid_names_the_previous_key_but_is_signed_with_another_returns_401(make_app):
    app = make_app(SECRET_KEY=NEW_KEY, SECRET_KEY_PREVIOUS=OLD_KEY)
    old_kid = header(AuthActions(make_app(SECRET_KEY=OLD_KEY).test_client()).token("bob"))["kid"]
    token = AuthActions(app.test_client()).token()
    forged = jwt.encode(claims(token), NEW_KEY, algorithm="HS256", headers={"kid": old_kid})

    assert_problem(hello(app, forged), 401)


# ------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"SECRET_KEY_PREVIOUS": OLD_KEY},
            "SECRET_KEY_PREVIOUS needs SECRET_KEY: the previous key only verifies, the current one signs",
        ),
        (
            {"SECRET_KEY": NEW_KEY, "SECRET_KEY_PREVIOUS": "short"},
            "SECRET_KEY_PREVIOUS must be at least 32 bytes long",
        ),
        (
            {"SECRET_KEY": NEW_KEY, "SECRET_KEY_PREVIOUS": NEW_KEY},
            "SECRET_KEY_PREVIOUS must differ from SECRET_KEY (it is the key before the rotation)",
        ),
    ],
)
def test_a_bad_previous_key_stops_startup_with_one_line(environ, message):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)

    assert str(raised.value) == message


def test_the_previous_key_is_never_defaulted_nor_shown():
    settings = Settings.from_env({"SECRET_KEY": NEW_KEY, "SECRET_KEY_PREVIOUS": OLD_KEY})

    assert Settings.from_env({"SECRET_KEY": NEW_KEY}).secret_key_previous is None
    assert OLD_KEY not in repr(settings)
    assert OLD_KEY not in str(settings)


def test_config_check_shows_the_previous_key_only_as_set(app):
    result = app.test_cli_runner().invoke(
        args=["config", "check"], env={"SECRET_KEY": NEW_KEY, "SECRET_KEY_PREVIOUS": OLD_KEY}
    )

    assert result.exit_code == 0
    assert "SECRET_KEY_PREVIOUS=set" in result.output.splitlines()
    assert OLD_KEY not in result.output
    assert NEW_KEY not in result.output


def test_keys_rotate_prints_a_new_key_the_service_accepts(app):
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])

    assert result.exit_code == 0
    key = result.output.splitlines()[0]
    assert len(key) == 64
    assert Settings.from_env({"SECRET_KEY": key, "SECRET_KEY_PREVIOUS": NEW_KEY}).secret_key == key
    assert "SECRET_KEY_PREVIOUS" in result.output

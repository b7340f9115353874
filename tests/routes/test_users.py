"""GET /id and GET /hello, and every way a bearer token can be refused."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import jwt
import pytest

from harness import wait_until
from src import security
from tests.conftest import PASSWORD, AuthActions, assert_problem


def session_of(token: str) -> str:
    """The session id an access token carries."""
    return jwt.decode(token, options={"verify_signature": False})["sess"]


def forge(
    app,
    claims: dict,
    key: str | None = None,
    algorithm: str = "HS256",
    without: tuple[str, ...] = (),
    *,
    sess: object = "A" * 22,
) -> str:
    """A token with these claims over a complete set minus ``without``, signed with ``key`` (the app's)."""
    now = int(time.time())
    payload = {
        "sub": "1",
        "sid": app.extensions["user_store"].store_id(),
        "sess": sess,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "type": "access",
        "jti": "x",
        "fresh": False,
    }
    payload.update(claims)
    for name in without:
        del payload[name]
    tokens = app.extensions["access_tokens"]
    return jwt.encode(payload, key or tokens.key, algorithm=algorithm, headers={"kid": tokens.kid})


def unsigned(claims: dict) -> str:
    """A token with ``alg: none`` and no signature."""

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def assert_unauthorized(response) -> None:
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


# ------------------------------------------------------------------------------------------------ success


def test_id_returns_the_id_of_the_token_user(auth):
    user_id = auth.register("alice").get_json()["id"]
    token = auth.token("alice")

    response = auth.get("/id", token)

    assert response.status_code == 200
    assert response.get_json() == {"id": user_id}


def test_id_tells_users_apart(auth):
    alice, bob = auth.token("alice"), auth.token("bob")

    assert auth.get("/id", alice).get_json() != auth.get("/id", bob).get_json()


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("alice", "Hello Alice"),
        ("ALICE", "Hello Alice"),
        ("aLiCe", "Hello Alice"),
        ("jean pierre", "Hello Jean pierre"),
        ("007bond", "Hello 007bond"),
        ("_x", "Hello _x"),
    ],
)
def test_hello_greets_the_user_with_the_name_capitalised(auth, username, message):
    token = auth.token(username)

    response = auth.get("/hello", token)

    assert response.status_code == 200
    assert response.get_json() == {"message": message}


def test_protected_routes_answer_json(auth):
    token = auth.token()

    for path in ("/id", "/hello"):
        assert auth.get(path, token).mimetype == "application/json"


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("path", ["/id", "/hello"])
def test_without_a_token_returns_401_with_bearer_challenge(client, path):
    assert_unauthorized(client.get(path))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-token",
        "Bearer a.b.c",
        "Bearer x y",
        "Basic YWxpY2U6cHc=",
        "Token abc",
    ],
)
def test_malformed_authorization_returns_401(client, authorization):
    assert_unauthorized(client.get("/id", headers={"Authorization": authorization}))


def test_bearer_scheme_is_case_insensitive(auth, client):
    token = auth.token()

    assert client.get("/id", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_token_without_the_bearer_prefix_returns_401(auth, client):
    token = auth.token()

    assert_unauthorized(client.get("/id", headers={"Authorization": token}))


def test_token_in_the_query_string_is_not_accepted(auth, client):
    token = auth.token()

    assert_unauthorized(client.get(f"/id?jwt={token}"))


def test_token_signed_with_another_key_returns_401(app, auth):
    sess = session_of(auth.token())

    assert_unauthorized(
        auth.get("/id", forge(app, {}, key="another-key-that-is-long-enough-0123456789", sess=sess))
    )


def test_token_with_a_tampered_payload_returns_401(app, auth):
    header, _payload, signature = auth.token("alice").split(".")
    auth.register("bob")
    forged_payload = jwt.utils.base64url_encode(json.dumps({"sub": "2"}).encode()).decode()

    assert_unauthorized(auth.get("/id", f"{header}.{forged_payload}.{signature}"))


def test_expired_token_returns_401(app, auth):
    sess = session_of(auth.token("alice"))
    past = int(time.time()) - 100

    response = auth.get("/id", forge(app, {"iat": past - 10, "nbf": past - 10, "exp": past}, sess=sess))

    assert_unauthorized(response)
    assert "expired" in response.get_json()["detail"]


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "type", "sid", "sess"])
def test_token_missing_a_required_claim_returns_401(app, auth, claim):
    sess = session_of(auth.token("alice"))

    assert auth.get("/id", forge(app, {}, sess=sess)).status_code == 200
    assert_unauthorized(auth.get("/id", forge(app, {}, sess=sess, without=(claim,))))


def test_token_of_a_session_that_never_existed_returns_401(app, auth):
    auth.token("alice")

    response = auth.get("/id", forge(app, {}, sess="B" * 22))

    assert_unauthorized(response)
    assert response.get_json()["detail"] == "The session of this token has ended."


@pytest.mark.parametrize("sess", [1, None, ["x"], "short", "A" * 21 + "!", "A" * 23])
def test_token_with_a_malformed_session_id_returns_401(app, auth, sess):
    auth.token("alice")

    assert_unauthorized(auth.get("/id", forge(app, {}, sess=sess)))


def test_token_naming_another_users_session_returns_401(app, auth):
    alice_sess = session_of(auth.token("alice"))
    auth.token("bob")

    assert_unauthorized(auth.get("/id", forge(app, {"sub": "2"}, sess=alice_sess)))


def test_token_from_a_replica_whose_clock_runs_a_few_seconds_ahead_is_accepted(app, auth):
    sess = session_of(auth.token("alice"))
    ahead = int(time.time()) + 3

    assert auth.get("/id", forge(app, {"iat": ahead, "nbf": ahead}, sess=sess)).status_code == 200


def test_the_clock_leeway_is_a_few_seconds_not_half_a_minute(app, auth):
    # The leeway tolerates clocks a few seconds apart (5 s): a token expired 30 s ago, or valid only in 30 s,
    # is refused. 30 s leaves room for a slow machine on either side of the 5 s.
    sess = session_of(auth.token("alice"))
    now = int(time.time())

    assert_unauthorized(
        auth.get("/id", forge(app, {"iat": now - 600, "nbf": now - 600, "exp": now - 30}, sess=sess))
    )
    assert_unauthorized(auth.get("/id", forge(app, {"iat": now + 30, "nbf": now + 30}, sess=sess)))


class Clock:
    """time.time() of the token check, moved by hand (a token lifetime is an hour)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def test_a_token_already_accepted_is_refused_once_it_expires(app, auth, monkeypatch):
    # The process remembers tokens it has verified: the memory must not outlive the token (3600 s + 5 s).
    token = auth.token("alice")
    assert auth.get("/id", token).status_code == 200
    assert auth.get("/id", token).status_code == 200
    clock = Clock()
    monkeypatch.setattr(security, "time", clock)

    clock.offset = 3600 + 6
    response = auth.get("/id", token)

    assert_unauthorized(response)
    assert response.get_json()["detail"] == "The bearer token has expired."


def test_a_token_already_accepted_is_refused_before_its_not_before_time(app, auth, monkeypatch):
    # Seen from a clock that runs behind (a replica whose time was set back), the remembered token is not
    # valid yet: the same answer as for a token never seen.
    token = auth.token("alice")
    assert auth.get("/id", token).status_code == 200
    clock = Clock()
    monkeypatch.setattr(security, "time", clock)

    clock.offset = -60
    response = auth.get("/id", token)

    assert_unauthorized(response)
    assert response.get_json()["detail"] == "The bearer token is invalid."
    clock.offset = 0
    assert auth.get("/id", token).status_code == 200


def test_tokens_remembered_by_the_process_are_bounded(app, auth, monkeypatch):
    # Every token of a busy process is verified once, and the oldest is forgotten when the memory is full:
    # a forgotten token is verified again and still accepted.
    monkeypatch.setattr(security.AccessTokens, "VERIFIED_TOKENS", 2)
    tokens = [auth.token("alice") for _ in range(3)]
    for token in tokens:
        assert auth.get("/id", token).status_code == 200

    assert len(app.extensions["access_tokens"]._verified) == 2
    assert auth.get("/id", tokens[0]).status_code == 200


def test_token_not_yet_valid_returns_401(app, auth):
    sess = session_of(auth.token("alice"))
    future = int(time.time()) + 3600

    assert_unauthorized(auth.get("/id", forge(app, {"nbf": future, "exp": future + 60}, sess=sess)))


def test_alg_none_token_returns_401(auth):
    auth.register("alice")

    assert_unauthorized(
        auth.get("/id", unsigned({"sub": "1", "type": "access", "exp": int(time.time()) + 600}))
    )


def test_token_signed_with_another_hmac_algorithm_returns_401(app, auth):
    sess = session_of(auth.token("alice"))

    assert_unauthorized(auth.get("/id", forge(app, {}, algorithm="HS512", sess=sess)))


@pytest.mark.parametrize("subject", ["999", "0", "-1", "abc", "1.0", " 1", "1_0", "\u0661"])
def test_token_naming_no_user_returns_401(app, auth, subject):
    sess = session_of(auth.token("alice"))

    assert_unauthorized(auth.get("/id", forge(app, {"sub": subject}, sess=sess)))


@pytest.mark.parametrize("subject", [1, None, {"id": 1}, ["1"]])
def test_token_with_a_non_string_subject_returns_401(app, auth, subject):
    sess = session_of(auth.token("alice"))

    assert_unauthorized(auth.get("/id", forge(app, {"sub": subject}, sess=sess)))


def test_refresh_token_is_not_accepted_as_an_access_token(app, auth):
    sess = session_of(auth.token("alice"))

    assert_unauthorized(auth.get("/id", forge(app, {"type": "refresh"}, sess=sess)))


def test_token_of_a_deleted_user_returns_401(app, auth):
    token = auth.token("alice")
    user_id = auth.get("/id", token).get_json()["id"]

    app.extensions["user_store"].delete_user(user_id)

    response = auth.get("/hello", token)
    assert_unauthorized(response)
    assert "no longer exists" in response.get_json()["detail"]


def test_token_stays_valid_for_a_new_app_on_the_same_store(make_app):
    first = make_app().test_client()
    first.post("/register", json={"username": "alice", "password": PASSWORD})
    token = first.post("/authenticate", json={"username": "alice", "password": PASSWORD}).get_json()[
        "access_token"
    ]

    restarted = make_app().test_client()

    response = restarted.get("/hello", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json() == {"message": "Hello Alice"}


def test_token_of_another_store_returns_401(app, auth):
    sess = session_of(auth.token("alice"))

    assert auth.get("/id", forge(app, {}, sess=sess)).status_code == 200
    assert_unauthorized(auth.get("/id", forge(app, {"sid": "0" * 32}, sess=sess)))


def test_a_password_changed_through_another_worker_is_seen_by_this_one(make_app, app_env):
    # Two apps on one store stand for two gunicorn workers (or two pods): each keeps its own cache of users.
    this_worker = AuthActions(make_app().test_client())
    other_worker = AuthActions(make_app().test_client())
    new_password = "correct horse battery!"
    this_worker.register("alice")
    old_token = this_worker.token("alice")
    # This worker has read alice (old hash) and served her session often enough to keep both in its caches.
    assert [this_worker.get("/hello", old_token).status_code for _ in range(3)] == [200] * 3
    data_file = Path(app_env["DATA_FILE_PATH"])
    before = data_file.stat() if "DATABASE_URL" not in app_env else None

    changed = other_worker.client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers={"Authorization": f"Bearer {other_worker.token('alice')}"},
    )
    assert changed.status_code == 204
    if before is not None:
        # An argon2 hash has a fixed length: the rewritten file has the size of the old one. Two writes in
        # one tick of the file system's clock (a few ms on ext4, 2 s on FAT, or an mtime set back by a
        # restore) share an mtime too: set it back, so that only the file's identity tells the change.
        assert data_file.stat().st_size == before.st_size
        os.utime(data_file, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert this_worker.authenticate("alice", PASSWORD).status_code == 401
    assert this_worker.authenticate("alice", new_password).status_code == 200
    # On PostgreSQL the end of the session reaches this worker as a notification, delivered at commit but
    # read by the next lookup only once it has arrived: waited for, up to 15 s (the cache's TTL is 60 s).
    wait_until(
        lambda: this_worker.get("/hello", old_token).status_code == 401,
        timeout=15.0,
        interval=0.005,
        what="the ended session to be refused",
    )

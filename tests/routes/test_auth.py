"""POST /register and POST /authenticate, including the failed-login limit."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import psycopg
import pytest

from src.routes import auth as auth_routes
from tests.conftest import PASSWORD, AuthActions, assert_problem

VALID_USERNAMES = ["a", "A" * 64, "alice", "Jean Pierre", "a.b_c-d", "007", "x y z", "-._"]
INVALID_USERNAMES = [
    "",
    " alice",
    "alice ",
    " ",
    "a" * 65,
    "al\tice",
    "al\nice",
    "al\x00ice",
    "al\x7fice",
    "al/ice",
    "al@ice",
    "élise",
    "al\u200bice",
]


# ------------------------------------------------------------------------------------------------ /register


def test_register_returns_201_with_id_and_username(auth):
    response = auth.register("alice")

    assert response.status_code == 201
    assert response.get_json() == {"id": 1, "username": "alice"}


def test_register_accepts_a_form_body(client):
    response = client.post("/register", data={"username": "bob", "password": PASSWORD})

    assert response.status_code == 201
    assert response.get_json()["username"] == "bob"


def test_register_gives_each_user_a_new_increasing_id(auth):
    ids = [auth.register(f"user{n}").get_json()["id"] for n in range(5)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_register_twice_returns_409(auth):
    auth.register("alice")

    response = auth.register("alice", "another password")

    body = assert_problem(response, 409)
    assert "already registered" in body["detail"]


def test_register_treats_names_differing_in_case_as_different_users(auth):
    first = auth.register("alice")
    second = auth.register("Alice")

    assert first.status_code == 201
    assert second.status_code == 201
    assert first.get_json()["id"] != second.get_json()["id"]


@pytest.mark.parametrize("username", VALID_USERNAMES)
def test_register_accepts_valid_usernames(auth, username):
    response = auth.register(username)

    assert response.status_code == 201
    assert response.get_json()["username"] == username


@pytest.mark.parametrize("username", INVALID_USERNAMES)
def test_register_with_invalid_username_returns_400_naming_username(auth, username):
    response = auth.register(username)

    assert assert_problem(response, 400)["detail"].startswith("username ")


@pytest.mark.parametrize("password", ["x" * 8, "y" * 128, "pass word", "🔑" * 8])
def test_register_accepts_passwords_of_8_to_128_characters(auth, password):
    assert auth.register("alice", password).status_code == 201


@pytest.mark.parametrize("password", ["", "x" * 7, "y" * 129, "z" * 10_000])
def test_register_with_password_too_short_or_too_long_returns_400(auth, password):
    response = auth.register("alice", password)

    assert assert_problem(response, 400)["detail"].startswith("password ")


@pytest.mark.parametrize("missing", ["username", "password"])
def test_register_without_a_field_returns_400_naming_it(client, missing):
    body = {"username": "alice", "password": PASSWORD}
    del body[missing]

    response = client.post("/register", json=body)

    assert assert_problem(response, 400)["detail"] == f"{missing} is required."


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("value", [None, 12345678, 1.5, True, ["alice"], {"name": "alice"}])
def test_register_with_a_non_string_field_returns_400_naming_it(client, field, value):
    body = {"username": "alice", "password": PASSWORD, field: value}

    response = client.post("/register", json=body)

    assert assert_problem(response, 400)["detail"] == f"{field} must be a string."


@pytest.mark.parametrize("payload", [b'{"username": "alice",', b"not json", b"\xff\xfe", b""])
def test_register_with_unreadable_json_returns_400(client, payload):
    response = client.post("/register", data=payload, content_type="application/json")

    assert assert_problem(response, 400)["detail"] == "The body is not valid JSON."


@pytest.mark.parametrize("payload", [[], ["alice", PASSWORD], "alice", 42, None])
def test_register_with_json_that_is_not_an_object_returns_400(client, payload):
    response = client.post("/register", data=json.dumps(payload), content_type="application/json")

    assert "JSON object" in assert_problem(response, 400)["detail"]


def test_register_without_a_body_returns_400(client):
    response = client.post("/register")

    assert assert_problem(response, 400)["detail"] == "username is required."


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_register_with_an_unsupported_media_type_returns_415(client, content_type):
    response = client.post("/register", data="username=alice", content_type=content_type)

    assert_problem(response, 415)


def test_register_accepts_a_json_media_type_with_charset(client):
    body = json.dumps({"username": "alice", "password": PASSWORD})

    response = client.post("/register", data=body, content_type="application/json; charset=utf-8")

    assert response.status_code == 201


def test_register_stores_an_argon2id_hash_never_the_password(app, auth):
    auth.register("alice", PASSWORD)

    user = app.extensions["user_store"].find_by_username("alice")
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in user.password_hash


def test_register_writes_no_password_to_the_data_file(app, auth, app_env):
    auth.register("alice", PASSWORD)

    if "DATABASE_URL" in app_env:
        with psycopg.connect(app_env["DATABASE_URL"]) as conn:
            stored = repr(conn.execute("SELECT * FROM users").fetchall())
    else:
        stored = Path(app_env["DATA_FILE_PATH"]).read_text()
    assert "'alice'" in stored or '"alice"' in stored  # the user is there ...
    assert PASSWORD not in stored  # ... without the password


# -------------------------------------------------------------------------------------------- /authenticate


def test_authenticate_returns_a_bearer_token(auth):
    auth.register("alice")

    response = auth.authenticate("alice")

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600


def test_authenticate_response_is_never_cached(auth):
    auth.register("alice")

    response = auth.authenticate("alice")

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_authenticate_accepts_a_form_body(auth, client):
    auth.register("alice")

    response = client.post("/authenticate", data={"username": "alice", "password": PASSWORD})

    assert response.status_code == 200


def test_authenticate_token_is_hs256_with_the_user_id_as_string_subject(app, auth):
    user_id = auth.register("alice").get_json()["id"]

    token = auth.authenticate("alice").get_json()["access_token"]

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, app.extensions["access_tokens"].key, algorithms=["HS256"])
    assert claims["sub"] == str(user_id)
    assert claims["exp"] - claims["iat"] == 3600


def test_authenticate_token_lifetime_follows_jwt_expires_seconds(make_app):
    client = make_app(JWT_EXPIRES_SECONDS="60").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})

    response = client.post("/authenticate", json={"username": "alice", "password": PASSWORD})

    assert response.get_json()["expires_in"] == 60


def test_authenticate_with_a_wrong_password_returns_401_with_bearer_challenge(auth):
    auth.register("alice")

    response = auth.authenticate("alice", "wrong password")

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_authenticate_unknown_user_gives_the_same_answer_as_a_wrong_password(auth):
    auth.register("alice")

    wrong_password = auth.authenticate("alice", "wrong password")
    unknown_user = auth.authenticate("mallory", "wrong password")

    assert unknown_user.status_code == wrong_password.status_code == 401
    assert unknown_user.get_json() == wrong_password.get_json()
    assert unknown_user.headers["WWW-Authenticate"] == wrong_password.headers["WWW-Authenticate"]


class RecordingHasher:
    """The real argon2 hasher, recording which hashes it verified against."""

    def __init__(self, hasher) -> None:
        self.hasher = hasher
        self.verified: list[str] = []

    def verify(self, hash_: str, password: str) -> bool:
        self.verified.append(hash_)
        return self.hasher.verify(hash_, password)


def test_authenticate_unknown_user_spends_one_argon2_verification(app, auth, monkeypatch):
    passwords = app.extensions["passwords"]
    recorder = RecordingHasher(passwords.hasher)
    monkeypatch.setattr(passwords, "hasher", recorder)

    auth.authenticate("mallory", "some password")

    assert recorder.verified == [passwords.dummy_hash]


def test_authenticate_matches_usernames_exactly(auth):
    auth.register("alice")

    assert auth.authenticate("Alice").status_code == 401
    assert auth.authenticate("alice").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": PASSWORD}, "username"),
        ({"username": "alice"}, "password"),
        ({"username": 7, "password": PASSWORD}, "username"),
        ({"username": "alice", "password": ["x"]}, "password"),
        ({"username": " alice", "password": PASSWORD}, "username"),
        ({"username": "alice", "password": "short"}, "password"),
    ],
)
def test_authenticate_with_a_bad_field_returns_400_naming_it(client, body, field):
    response = client.post("/authenticate", json=body)

    assert assert_problem(response, 400)["detail"].startswith(field)


def test_authenticate_with_an_unsupported_media_type_returns_415(client):
    response = client.post("/authenticate", data="alice", content_type="text/plain")

    assert_problem(response, 415)


# ------------------------------------------------------------------------------------------------ login limit


def fail(auth, times: int, username: str = "alice", **kwargs) -> list[int]:
    return [auth.authenticate(username, "wrong password", **kwargs).status_code for _ in range(times)]


def test_repeated_failures_return_429_with_retry_after(auth, monkeypatch):
    monkeypatch.setattr(auth_routes, "time", Clock(1_000_000.0))
    auth.register("alice")

    assert fail(auth, 5) == [401] * 5
    response = auth.authenticate("alice", "wrong password")

    assert_problem(response, 429)
    assert response.headers["Retry-After"] == "300"  # the default window, all failures at the same instant


def test_limited_client_is_refused_even_with_the_right_password(auth):
    auth.register("alice")
    fail(auth, 5)

    assert auth.authenticate("alice", PASSWORD).status_code == 429


def test_limited_attempt_is_refused_before_any_password_verification(app, auth, monkeypatch):
    auth.register("alice")
    fail(auth, 5)
    passwords = app.extensions["passwords"]
    recorder = RecordingHasher(passwords.hasher)
    monkeypatch.setattr(passwords, "hasher", recorder)

    assert auth.authenticate("alice", PASSWORD).status_code == 429
    assert recorder.verified == []


def test_limit_applies_to_unknown_usernames_too(auth):
    assert fail(auth, 6, username="mallory") == [401] * 5 + [429]


def test_limit_is_per_username(auth):
    auth.register("alice")
    auth.register("bob")
    fail(auth, 5, "alice")

    assert auth.authenticate("bob").status_code == 200


def test_limit_is_per_client_address(auth):
    auth.register("alice")
    fail(auth, 5, environ_base={"REMOTE_ADDR": "192.0.2.1"})

    assert auth.authenticate("alice", environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 200
    assert auth.authenticate("alice", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 429


def test_successful_login_clears_the_failures(auth):
    auth.register("alice")
    fail(auth, 4)

    assert auth.authenticate("alice").status_code == 200
    assert fail(auth, 5) == [401] * 5


class Clock:
    """The route's clock, set by the test: ``time.time()`` of src/routes/auth.py."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_failure_stops_counting_exactly_one_window_after_it_happened(make_app, monkeypatch):
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(auth_routes, "time", clock)
    client = make_app(AUTH_FAILURE_WINDOW_SECONDS="300", AUTH_MAX_FAILURES="2").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})

    def login(password: str = PASSWORD):
        return client.post("/authenticate", json={"username": "alice", "password": password})

    assert login("wrong password").status_code == 401  # at 1_000_000
    clock.now = 1_000_010.0
    assert login("wrong password").status_code == 401
    limited = login()
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "290"  # the oldest failure leaves the window at 1_000_300
    clock.now = 1_000_299.5
    assert login().headers["Retry-After"] == "1"
    clock.now = 1_000_300.0  # the first failure is now exactly one window old: it no longer counts
    assert login().status_code == 200


def test_auth_max_failures_zero_disables_the_limit(make_app):
    client = make_app(AUTH_MAX_FAILURES="0").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})

    statuses = [
        client.post("/authenticate", json={"username": "alice", "password": "wrong password"}).status_code
        for _ in range(8)
    ]

    assert statuses == [401] * 8


def test_forwarded_address_is_ignored_without_trusted_proxies(auth):
    auth.register("alice")
    fail(auth, 5, headers={"X-Forwarded-For": "198.51.100.1"})

    response = auth.authenticate("alice", headers={"X-Forwarded-For": "198.51.100.2"})

    assert response.status_code == 429


def test_forwarded_address_from_a_trusted_proxy_keys_the_limit(make_app):
    client = make_app(TRUSTED_PROXY_COUNT="1", TRUSTED_PROXIES="127.0.0.1").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})
    for _ in range(5):
        client.post(
            "/authenticate",
            json={"username": "alice", "password": "wrong password"},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )

    other_client = client.post(
        "/authenticate",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.2"},
    )

    assert other_client.status_code == 200


def test_forwarded_address_from_a_peer_outside_trusted_proxies_is_ignored(make_app):
    client = make_app(TRUSTED_PROXY_COUNT="1", TRUSTED_PROXIES="10.42.0.0/16").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})
    for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"):
        client.post(
            "/authenticate",
            json={"username": "alice", "password": "wrong password"},
            headers={"X-Forwarded-For": address},
        )

    response = client.post(
        "/authenticate",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.6"},
    )

    assert response.status_code == 429


def test_behind_two_proxies_the_limit_keys_on_the_address_the_outer_proxy_saw(make_app):
    # The client reaches an edge proxy, which forwards to an inner proxy, which reaches the app from
    # 127.0.0.1 (the test client's address). Each proxy appends its peer to X-Forwarded-For, so the chain
    # ends with "<client>, <edge proxy>" and whatever precedes the client is the client's own, forgeable
    # claim. With TRUSTED_PROXY_COUNT=2 the client is the second address from the right: not the edge proxy
    # (every client would share one limit) and not the forged first one (a new one per try escapes it).
    client = make_app(TRUSTED_PROXY_COUNT="2", TRUSTED_PROXIES="127.0.0.1").test_client()
    client.post("/register", json={"username": "alice", "password": PASSWORD})

    def login(password: str, forged: str, real: str):
        chain = f"{forged}, {real}, 10.0.0.5"
        return client.post(
            "/authenticate",
            json={"username": "alice", "password": password},
            headers={"X-Forwarded-For": chain},
        )

    failures = [login("wrong password", f"203.0.113.{n}", "198.51.100.1").status_code for n in range(5)]
    same_client_new_forgery = login(PASSWORD, "203.0.113.99", "198.51.100.1")
    other_client_same_proxies = login(PASSWORD, "203.0.113.1", "198.51.100.2")

    assert failures == [401] * 5
    assert same_client_new_forgery.status_code == 429
    assert other_client_same_proxies.status_code == 200


def test_behind_two_proxies_the_access_log_names_the_client(make_app, capfd):
    client = make_app(TRUSTED_PROXY_COUNT="2", TRUSTED_PROXIES="127.0.0.1").test_client()
    capfd.readouterr()

    client.get("/readyz", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.1, 10.0.0.5"})

    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.strip()]
    (access,) = [line for line in lines if line.get("logger") == "access"]
    assert access["remote_addr"] == "198.51.100.1"


@pytest.fixture
def proxied(make_app):
    """AuthActions on an app that believes X-Forwarded-For from the test client's 127.0.0.1."""

    def build(**settings: str) -> AuthActions:
        app = make_app(TRUSTED_PROXY_COUNT="1", TRUSTED_PROXIES="127.0.0.1", **settings)
        return AuthActions(app.test_client())

    return build


def from_address(address: str) -> dict:
    return {"headers": {"X-Forwarded-For": address}}


def test_guesses_from_many_addresses_stop_at_one_per_address_once_the_username_bound_is_reached(proxied):
    auth = proxied(AUTH_MAX_FAILURES="2", AUTH_MAX_FAILURES_PER_USERNAME="4")
    auth.register("alice")

    assert fail(auth, 3, **from_address("198.51.100.1")) == [401, 401, 429]
    assert fail(auth, 3, **from_address("198.51.100.2")) == [401, 401, 429]
    # The username has 4 failures: a new address gets one attempt, not two.
    assert fail(auth, 2, **from_address("198.51.100.3")) == [401, 429]
    # The owner, from an address that never failed, still signs in.
    assert auth.authenticate("alice", **from_address("203.0.113.9")).status_code == 200


def test_one_address_guessing_many_usernames_is_cut_short(proxied):
    auth = proxied(AUTH_MAX_FAILURES_PER_ADDRESS="3")

    statuses = [auth.authenticate(f"user{n}", "wrong password").status_code for n in range(4)]

    assert statuses == [401, 401, 401, 429]


def test_a_right_password_is_not_counted_as_a_failure(proxied):
    auth = proxied(AUTH_MAX_FAILURES_PER_ADDRESS="2")
    auth.register("alice")

    assert [auth.authenticate("alice").status_code for _ in range(3)] == [200, 200, 200]


def test_registrations_are_limited_per_address(proxied):
    auth = proxied(REGISTER_MAX_PER_ADDRESS="2")

    statuses = [auth.register(f"user{n}", **from_address("198.51.100.1")).status_code for n in range(3)]
    refused = auth.register("user9", **from_address("198.51.100.1"))

    assert statuses == [201, 201, 429]
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert auth.register("user3", **from_address("198.51.100.2")).status_code == 201


def test_past_the_registration_limit_a_taken_name_gets_the_same_429_as_a_free_one(proxied):
    auth = proxied(REGISTER_MAX_PER_ADDRESS="2")
    attacker = from_address("198.51.100.1")
    assert auth.register("alice", **from_address("198.51.100.2")).status_code == 201
    assert [auth.register(f"user{n}", **attacker).status_code for n in range(2)] == [201, 201]

    taken, free = auth.register("alice", **attacker), auth.register("nobody", **attacker)

    taken_body, free_body = assert_problem(taken, 429), assert_problem(free, 429)
    assert taken_body == free_body
    assert int(taken.headers["Retry-After"]) > 0
    assert int(free.headers["Retry-After"]) > 0


def test_a_409_spends_the_registration_limit_as_a_201_does(proxied):
    auth = proxied(REGISTER_MAX_PER_ADDRESS="2")
    assert auth.register("alice", **from_address("198.51.100.2")).status_code == 201
    attacker = from_address("198.51.100.1")

    statuses = [auth.register(name, **attacker).status_code for name in ("alice", "alice", "alice", "bob")]

    assert statuses == [409, 409, 429, 429]


def test_a_registration_shed_with_503_does_not_spend_the_registration_limit(make_app):
    app = make_app(REGISTER_MAX_PER_ADDRESS="2", ARGON2_CONCURRENCY="1", ARGON2_WAIT_SECONDS="0")
    auth = AuthActions(app.test_client())

    with app.extensions["passwords"].slot():  # every hashing slot of the process is busy
        shed = auth.register("alice")

    assert_problem(shed, 503)
    assert [auth.register(name).status_code for name in ("alice", "bob", "carol")] == [201, 201, 429]

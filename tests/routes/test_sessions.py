"""Sessions through the app, with both stores: refresh tokens rotated on use, logout, password change, account
deletion, GET /users/me, and hashes upgraded at login."""

from __future__ import annotations

import re
import threading
import time

import pytest

from src.routes import auth as auth_routes
from src.routes import sessions as session_routes
from tests.conftest import PASSWORD, AuthActions, assert_problem

NEW_PASSWORD = "a brand new passphrase"


def assert_refused(response) -> None:
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    """time.time() of the refresh route, moved by hand (lifetimes of days cannot be waited for)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(session_routes, "time", clock)
    return clock


# ------------------------------------------------------------------------------------------------ login


def test_authenticate_returns_a_refresh_token_and_its_lifetime(auth):
    body = auth.login()

    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    # <session id>.<generation>.<MAC>: 22 and 43 URL-safe base64 characters around the first generation
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}\.1\.[A-Za-z0-9_-]{43}", body["refresh_token"])
    assert body["refresh_expires_in"] in (604_799, 604_800)  # the 7-day idle limit comes first


def test_refresh_token_is_not_stored(app, auth, app_env):
    refresh_token = auth.login()["refresh_token"]

    if "DATABASE_URL" in app_env:
        import psycopg

        with psycopg.connect(app_env["DATABASE_URL"]) as conn:
            stored = " ".join(str(row) for row in conn.execute("SELECT * FROM refresh_tokens"))
    else:
        with open(app_env["DATA_FILE_PATH"] + ".sessions", encoding="utf-8") as file:
            stored = file.read()
    assert stored
    assert refresh_token not in stored


def test_each_login_starts_its_own_session(auth):
    first, second = auth.login(), auth.login()

    assert auth.logout(first["access_token"]).status_code == 204

    assert auth.get("/hello", second["access_token"]).status_code == 200
    assert auth.refresh(second["refresh_token"]).status_code == 200


# ------------------------------------------------------------------------------------------------ refresh


def test_refresh_returns_new_tokens_of_the_same_shape(auth):
    login = auth.login()

    response = auth.refresh(login["refresh_token"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"] != login["refresh_token"]
    assert auth.get("/hello", body["access_token"]).get_json() == {"message": "Hello Alice"}
    assert auth.get("/hello", login["access_token"]).status_code == 200  # same session, still live


def test_new_refresh_token_can_be_refreshed_again(auth):
    refresh_token = auth.login()["refresh_token"]
    for _ in range(3):
        response = auth.refresh(refresh_token)
        assert response.status_code == 200
        refresh_token = response.get_json()["refresh_token"]


def test_spent_refresh_token_returns_401_and_ends_the_session(auth):
    login = auth.login()
    renewed = auth.refresh(login["refresh_token"]).get_json()

    response = auth.refresh(login["refresh_token"])

    assert_refused(response)
    assert "already used" in response.get_json()["detail"]
    assert_refused(auth.refresh(renewed["refresh_token"]))
    assert_refused(auth.get("/hello", renewed["access_token"]))
    assert_refused(auth.get("/hello", login["access_token"]))


def test_reuse_in_one_session_leaves_other_sessions_alone(auth):
    login, other = auth.login(), auth.login()
    auth.refresh(login["refresh_token"])

    assert_refused(auth.refresh(login["refresh_token"]))

    assert auth.get("/hello", other["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "refresh_token",
    ["A" * 43, "short", "A" * 44, "A" * 42 + "!", "", "\u00e9" * 43, "A" * 42 + "\x00"],
)
def test_unknown_or_malformed_refresh_token_returns_401(auth, refresh_token):
    auth.login()

    assert_refused(auth.refresh(refresh_token))


def test_a_forged_earlier_generation_is_refused_and_ends_nothing(auth):
    login = auth.login()
    renewed = auth.refresh(login["refresh_token"]).get_json()
    session_id, _, mac = login["refresh_token"].split(".")
    forged = f"{session_id}.1.{mac[::-1]}"  # the spent generation, without its MAC

    response = auth.refresh(forged)

    assert_refused(response)
    assert response.get_json()["detail"] == "The refresh token is unknown or its session has ended."
    assert auth.get("/hello", renewed["access_token"]).status_code == 200
    assert auth.refresh(renewed["refresh_token"]).status_code == 200


def test_a_refresh_token_of_the_earlier_random_format_returns_401(auth):
    auth.login()

    response = auth.refresh("kR2hV0n4yQ7pXw9sL1tB6dF3gJ8mN5cZ0aE2uI4oP7q")  # 43 random characters

    assert_refused(response)


def test_access_token_is_not_a_refresh_token(auth):
    assert_refused(auth.refresh(auth.login()["access_token"]))


@pytest.mark.parametrize("body", [{}, {"refresh_token": 1}, {"refresh_token": None}, {"token": "x"}])
def test_refresh_without_a_string_refresh_token_returns_400(client, body):
    assert_problem(client.post("/token/refresh", json=body), 400)


def test_refresh_with_a_body_that_is_not_json_returns_415(client):
    response = client.post("/token/refresh", data=b"x", content_type="text/plain")

    assert_problem(response, 415)


def test_refresh_token_expires_after_the_idle_lifetime(make_app, clock):
    client = make_app(SESSION_IDLE_SECONDS="600", SESSION_ABSOLUTE_SECONDS="3600").test_client()
    auth = AuthActions(client)
    login = auth.login()
    assert login["refresh_expires_in"] in (599, 600)

    clock.offset = 601
    response = auth.refresh(login["refresh_token"])

    assert_refused(response)
    assert "expired" in response.get_json()["detail"]


def test_refresh_token_expires_at_the_absolute_lifetime_however_often_it_is_used(make_app, clock):
    auth = AuthActions(make_app(SESSION_IDLE_SECONDS="600", SESSION_ABSOLUTE_SECONDS="1000").test_client())
    refresh_token = auth.login()["refresh_token"]

    clock.offset = 300
    first = auth.refresh(refresh_token).get_json()
    assert first["refresh_expires_in"] in (599, 600)  # the idle limit, renewed from now
    clock.offset = 800  # past the first idle limit (600), inside the renewed one (900)
    second = auth.refresh(first["refresh_token"]).get_json()
    assert second["refresh_expires_in"] in (199, 200)  # the absolute limit (1000) now comes first
    clock.offset = 1001
    assert_refused(auth.refresh(second["refresh_token"]))


def test_refreshes_from_one_address_are_limited_with_429_and_retry_after(make_app):
    auth = AuthActions(make_app(REFRESH_MAX_PER_ADDRESS="3").test_client())
    refresh_token = auth.login()["refresh_token"]
    statuses = []
    for _ in range(3):
        response = auth.refresh(refresh_token)
        statuses.append(response.status_code)
        refresh_token = response.get_json()["refresh_token"]

    refused = auth.refresh(refresh_token)

    assert statuses == [200, 200, 200]
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert_problem(auth.refresh("A" * 43), 429)  # a made-up token counts too, and is not tried


def test_a_refused_refresh_leaves_the_session_usable_once_the_window_is_over(make_app, clock, monkeypatch):
    monkeypatch.setattr(auth_routes, "time", clock)  # the limit's clock
    auth = AuthActions(make_app(REFRESH_MAX_PER_ADDRESS="1", AUTH_FAILURE_WINDOW_SECONDS="60").test_client())
    refresh_token = auth.login()["refresh_token"]
    refresh_token = auth.refresh(refresh_token).get_json()["refresh_token"]
    assert_problem(auth.refresh(refresh_token), 429)

    clock.offset += 61

    assert auth.refresh(refresh_token).status_code == 200


def test_concurrent_refreshes_of_one_token_give_exactly_one_200(app, auth):
    refresh_token = auth.login()["refresh_token"]
    start = threading.Barrier(8)
    statuses: list[int] = []

    def refresh() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/token/refresh", json={"refresh_token": refresh_token}).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [200] + [401] * 7


# ------------------------------------------------------------------------------------------------ logout


def test_logout_returns_204_and_ends_the_session(auth):
    login = auth.login()

    response = auth.logout(login["access_token"])

    assert response.status_code == 204
    assert response.data == b""
    hello = auth.get("/hello", login["access_token"])
    assert_refused(hello)
    assert hello.get_json()["detail"] == "The session of this token has ended."
    assert_refused(auth.refresh(login["refresh_token"]))
    assert_refused(auth.logout(login["access_token"]))


def test_logout_ends_the_access_tokens_of_later_refreshes_too(auth):
    login = auth.login()
    renewed = auth.refresh(login["refresh_token"]).get_json()

    assert auth.logout(login["access_token"]).status_code == 204

    assert_refused(auth.get("/id", renewed["access_token"]))
    assert_refused(auth.refresh(renewed["refresh_token"]))


def test_logout_leaves_the_other_users_alone(auth):
    alice, bob = auth.login("alice"), auth.login("bob")

    auth.logout(alice["access_token"])

    assert auth.get("/hello", bob["access_token"]).get_json() == {"message": "Hello Bob"}


def test_logout_without_a_token_returns_401(client):
    assert_refused(client.post("/logout"))


def test_logout_seen_by_another_instance_on_the_same_store(make_app):
    first, second = AuthActions(make_app().test_client()), AuthActions(make_app().test_client())
    login = first.login()
    assert second.get("/hello", login["access_token"]).status_code == 200  # cached there now

    assert first.logout(login["access_token"]).status_code == 204

    assert_refused(second.get("/hello", login["access_token"]))


# ------------------------------------------------------------------------------------------------ /users/me


def test_users_me_returns_id_and_username_only(auth):
    user_id = auth.register("alice").get_json()["id"]
    token = auth.login()["access_token"]

    response = auth.get("/users/me", token)

    assert response.status_code == 200
    assert response.get_json() == {"id": user_id, "username": "alice"}


def test_users_me_without_a_token_returns_401(client):
    assert_refused(client.get("/users/me"))


# ------------------------------------------------------------------------------------------------ password


def change_password(auth, token: str, current: str = PASSWORD, new: str = NEW_PASSWORD):
    return auth.client.put(
        "/users/me/password", json={"current_password": current, "new_password": new}, headers=bearer(token)
    )


def test_password_change_returns_204_and_ends_every_session(auth):
    first, second = auth.login(), auth.login()

    assert change_password(auth, first["access_token"]).status_code == 204

    for login in (first, second):
        assert_refused(auth.get("/hello", login["access_token"]))
        assert_refused(auth.refresh(login["refresh_token"]))


def test_after_a_password_change_the_old_password_fails_and_the_new_one_works(auth):
    change_password(auth, auth.login()["access_token"])

    assert_refused(auth.authenticate("alice", PASSWORD))
    response = auth.authenticate("alice", NEW_PASSWORD)
    assert response.status_code == 200
    assert auth.get("/hello", response.get_json()["access_token"]).status_code == 200


def test_password_change_leaves_other_users_sessions_alone(auth):
    alice, bob = auth.login("alice"), auth.login("bob")

    change_password(auth, alice["access_token"])

    assert auth.get("/hello", bob["access_token"]).status_code == 200


def test_password_change_with_a_wrong_current_password_returns_401_and_changes_nothing(auth):
    login = auth.login()

    response = change_password(auth, login["access_token"], current="not the password")

    assert_refused(response)
    assert auth.get("/hello", login["access_token"]).status_code == 200
    assert auth.authenticate("alice", PASSWORD).status_code == 200


def test_wrong_current_passwords_count_as_failed_logins(make_app):
    auth = AuthActions(make_app(AUTH_MAX_FAILURES="2").test_client())
    token = auth.login()["access_token"]

    assert_refused(change_password(auth, token, current="wrong password 1"))
    assert_refused(auth.authenticate("alice", "wrong password 2"))

    assert_problem(change_password(auth, token), 429)
    assert_problem(auth.authenticate("alice", PASSWORD), 429)


@pytest.mark.parametrize("new", ["short", "x" * 129])
def test_password_change_to_an_invalid_password_returns_400(auth, new):
    token = auth.login()["access_token"]

    body = assert_problem(change_password(auth, token, new=new), 400)

    assert "new_password" in body["detail"]
    assert auth.get("/hello", token).status_code == 200


def test_password_change_to_the_same_password_returns_400(auth):
    token = auth.login()["access_token"]

    body = assert_problem(change_password(auth, token, new=PASSWORD), 400)

    assert "differ" in body["detail"]
    assert auth.get("/hello", token).status_code == 200


@pytest.mark.parametrize("body", [{}, {"current_password": PASSWORD}, {"new_password": NEW_PASSWORD}])
def test_password_change_with_a_missing_field_returns_400(auth, body):
    token = auth.login()["access_token"]

    assert_problem(auth.client.put("/users/me/password", json=body, headers=bearer(token)), 400)


# A lone surrogate, as JSON spells it; UTF-8 (and so argon2) cannot encode it.
LONE_SURROGATE_PASSWORDS = {
    "current_password": b'{"current_password": "abcdefgh\\ud800", "new_password": "a new password 1"}',
    "new_password": b'{"current_password": "correct horse battery", "new_password": "abcdefgh\\ud800"}',
}


@pytest.mark.parametrize("field", sorted(LONE_SURROGATE_PASSWORDS))
def test_password_change_with_a_lone_surrogate_returns_400_naming_the_field(auth, field):
    token = auth.login()["access_token"]

    response = auth.client.put(
        "/users/me/password",
        data=LONE_SURROGATE_PASSWORDS[field],
        content_type="application/json",
        headers=bearer(token),
    )

    assert field in assert_problem(response, 400)["detail"]
    assert auth.get("/hello", token).status_code == 200


def test_password_change_without_a_token_returns_401(client):
    response = client.put(
        "/users/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert_refused(response)


# ------------------------------------------------------------------------------------------------ deletion


def delete_account(auth, token: str, password: str = PASSWORD):
    return auth.client.delete("/users/me", json={"password": password}, headers=bearer(token))


def test_delete_returns_204_and_every_token_of_the_user_is_refused(auth):
    first, second = auth.login(), auth.login()

    assert delete_account(auth, first["access_token"]).status_code == 204

    for login in (first, second):
        assert_refused(auth.get("/hello", login["access_token"]))
        assert_refused(auth.refresh(login["refresh_token"]))
    assert_refused(auth.authenticate())


def test_deleted_name_can_be_registered_again_under_a_new_id(auth):
    old_id = auth.register("alice").get_json()["id"]
    delete_account(auth, auth.login()["access_token"])

    response = auth.register("alice")

    assert response.status_code == 201
    assert response.get_json()["id"] > old_id
    assert auth.authenticate().status_code == 200


def test_delete_with_a_wrong_password_returns_401_and_keeps_the_account(auth):
    token = auth.login()["access_token"]

    assert_refused(delete_account(auth, token, password="not the password"))

    assert auth.get("/hello", token).status_code == 200


def test_delete_without_a_password_returns_400(auth):
    token = auth.login()["access_token"]

    assert_problem(auth.client.delete("/users/me", json={}, headers=bearer(token)), 400)


def test_delete_with_a_lone_surrogate_password_returns_400_and_keeps_the_account(auth):
    token = auth.login()["access_token"]

    response = auth.client.delete(
        "/users/me",
        data=b'{"password": "abcdefgh\\ud800"}',
        content_type="application/json",
        headers=bearer(token),
    )

    assert "password" in assert_problem(response, 400)["detail"]
    assert auth.get("/hello", token).status_code == 200


def test_delete_forgets_the_failed_logins_of_the_user(make_app):
    auth = AuthActions(make_app(AUTH_MAX_FAILURES="2").test_client())
    token = auth.login()["access_token"]
    assert_refused(auth.authenticate("alice", "wrong password 1"))

    assert delete_account(auth, token).status_code == 204

    auth.register("alice")
    assert_refused(auth.authenticate("alice", "wrong password 2"))
    assert auth.authenticate().status_code == 200  # one failure counted, not two


def test_delete_leaves_other_users_alone(auth):
    alice, bob = auth.login("alice"), auth.login("bob")

    delete_account(auth, alice["access_token"])

    assert auth.get("/hello", bob["access_token"]).get_json() == {"message": "Hello Bob"}


# ------------------------------------------------------------------------------------------------ rehash


def test_a_hash_made_with_older_parameters_is_upgraded_at_the_next_login(make_app):
    AuthActions(make_app().test_client()).register("alice")
    upgraded = make_app(ARGON2_TIME_COST="3")
    store = upgraded.extensions["user_store"]
    assert store.find_by_username("alice").password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    login = AuthActions(upgraded.test_client()).login()

    assert store.find_by_username("alice").password_hash.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    assert upgraded.test_client().get("/hello", headers=bearer(login["access_token"])).status_code == 200

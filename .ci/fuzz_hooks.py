"""Schemathesis hooks for .ci/check_fuzz.py.

* Every error is problem+json with the four RFC 9457 members.
* Operations that need a bearer token get the fuzz user's token (FUZZ_ACCESS_TOKEN); POST /logout gets a
  token of a session started for that one call, so that ending it leaves the other operations signed in.
"""

import json
import os
import urllib.request

import schemathesis

LOGOUT_CREDENTIALS = {"username": "fuzz.logout", "password": "fuzzing password 2"}


def _fresh_token(base_url: str) -> str:
    request = urllib.request.Request(  # noqa: S310 - the loopback URL check_fuzz.py serves
        base_url + "/authenticate",
        json.dumps(LOGOUT_CREDENTIALS).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)["access_token"]


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """Sign secured operations in; POST /logout in a session of its own."""
    if not case.operation.definition.raw.get("security"):
        return
    if case.operation.path == "/logout":
        token = _fresh_token(os.environ["FUZZ_BASE_URL"])
    else:
        token = os.environ["FUZZ_ACCESS_TOKEN"]
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.check
def problem_json_errors(ctx, response, case):
    """Every 4xx/5xx is application/problem+json with type, title, status and detail."""
    if response.status_code < 400:
        return
    # Schemathesis keeps header names lower-case, each with a list of values.
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media_type != "application/problem+json":
        raise AssertionError(
            f"{response.status_code} answered as {media_type!r}, not application/problem+json"
        )
    body = response.json()
    missing = {"type", "title", "status", "detail"} - set(body)
    if missing:
        raise AssertionError(f"problem document lacks {sorted(missing)}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} differs from HTTP {response.status_code}")

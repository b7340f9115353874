"""Schemathesis hook for .ci/check_fuzz.py: every error is problem+json with the four RFC 9457 members."""

import schemathesis


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

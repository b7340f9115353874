#!/usr/bin/env bash
# Smoke test of a running flask-api: register, authenticate, /id, /hello, refresh, logout, /readyz, /metrics.
#
# Usage: smoke-test.sh BASE_URL [METRICS_URL | --metrics-not-public]
#   BASE_URL              where the API answers, e.g. http://127.0.0.1:8080 (k3d's load balancer port)
#   METRICS_URL           where /metrics answers when METRICS_PORT is set (default: BASE_URL)
#   --metrics-not-public  BASE_URL is the public entry (the Ingress): /metrics must answer 404 there
# Needs curl and python3. Exits non-zero on the first check that fails.
set -euo pipefail

base_url="${1:?usage: smoke-test.sh BASE_URL [METRICS_URL | --metrics-not-public]}"
metrics_url="${2:-$base_url}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}

# request METHOD PATH EXPECTED_STATUS [curl args...]: the body lands in $work/body.
request() {
  local method="$1" url="$2" expected="$3"
  shift 3
  local status
  status="$(curl --silent --show-error --max-time 10 --output "$work/body" --write-out '%{http_code}' \
    --request "$method" "$@" "$url")" || fail "$method $url: no answer"
  if [[ "$status" != "$expected" ]]; then
    fail "$method $url: status $status, expected $expected: $(head -c 500 "$work/body")"
  fi
  echo "smoke: $method $url -> $status"
}

# json_field NAME: prints a top-level field of $work/body.
json_field() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/body" "$1"
}

# The name is fresh on every run, so the test also passes against a database that keeps users.
username="smoke-$(date +%s)-$RANDOM"
password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
credentials="$(python3 -c 'import json, sys; print(json.dumps({"username": sys.argv[1], "password": sys.argv[2]}))' \
  "$username" "$password")"

request GET "$base_url/readyz" 200

request POST "$base_url/register" 201 --header 'Content-Type: application/json' --data "$credentials"
user_id="$(json_field id)"
[[ "$user_id" =~ ^[1-9][0-9]*$ ]] || fail "/register gave id '$user_id'"

request POST "$base_url/register" 409 --header 'Content-Type: application/json' --data "$credentials"

request POST "$base_url/authenticate" 200 --header 'Content-Type: application/json' --data "$credentials"
cp "$work/body" "$work/login.json"
token="$(json_field access_token)"
[[ -n "$token" ]] || fail "/authenticate gave no access_token"
# The token goes to curl through a file, so it shows in no process list.
printf 'header = "Authorization: Bearer %s"\n' "$token" >"$work/auth.curlrc"

request GET "$base_url/id" 200 --config "$work/auth.curlrc"
[[ "$(json_field id)" == "$user_id" ]] || fail "/id does not give the registered id $user_id"

request GET "$base_url/hello" 200 --config "$work/auth.curlrc"
message="$(json_field message)"
[[ "$message" == Hello\ * ]] || fail "/hello said '$message'"

refresh_token="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["refresh_token"])' \
  "$work/login.json")"
printf '{"refresh_token": "%s"}' "$refresh_token" >"$work/refresh.json"
request POST "$base_url/token/refresh" 200 --header 'Content-Type: application/json' --data "@$work/refresh.json"
[[ "$(json_field refresh_token)" != "$refresh_token" ]] || fail "/token/refresh gave the same refresh token"
# A spent refresh token is refused.
request POST "$base_url/token/refresh" 401 --header 'Content-Type: application/json' --data "@$work/refresh.json"

# The refresh token was used twice, which ends the session; log in again to check /logout itself.
request POST "$base_url/authenticate" 200 --header 'Content-Type: application/json' --data "$credentials"
printf 'header = "Authorization: Bearer %s"\n' "$(json_field access_token)" >"$work/auth.curlrc"
request GET "$base_url/hello" 200 --config "$work/auth.curlrc"
request POST "$base_url/logout" 204 --config "$work/auth.curlrc"
request GET "$base_url/hello" 401 --config "$work/auth.curlrc"

request GET "$base_url/id" 401
if [[ "$metrics_url" == "--metrics-not-public" ]]; then
  request GET "$base_url/metrics" 404
else
  request GET "$metrics_url/metrics" 200
  grep -q '^# TYPE ' "$work/body" || fail "/metrics is not in the Prometheus text format"
fi

echo "smoke: all checks passed against $base_url"

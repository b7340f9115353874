#!/usr/bin/env bash
# Schemathesis against a live `gunicorn -w 4` (the project's gunicorn.conf.py), once with the JSON store in a
# temp folder and once with a throwaway PostgreSQL: no 5xx, every response as src/openapi.json describes it
# (status, media type, headers, body), and every error an application/problem+json document with type, title,
# status and detail.
#
# Usage: .ci/check-fuzz.sh            (FUZZ_MAX_EXAMPLES=<n> to change the examples per operation, default 100)
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
python="$venv/bin/python"
for tool in python gunicorn schemathesis; do
  if [ ! -x "$venv/bin/$tool" ]; then
    echo "check-fuzz: $venv/bin/$tool missing: create the dev venv first (make test does)" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
server_pid=""
postgres_pid=""
stop_pid() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
  fi
}
cleanup() {
  stop_pid "$server_pid"
  stop_pid "$postgres_pid"
  rm -rf "$work"
}
trap cleanup EXIT

# A check of our own: whatever the status, an error is problem+json with the four RFC 9457 members.
mkdir -p "$work/hooks"
cat >"$work/hooks/fuzz_hooks.py" <<'EOF'
import schemathesis


@schemathesis.check
def problem_json_errors(ctx, response, case):
    """Every 4xx/5xx is application/problem+json with type, title, status and detail."""
    if response.status_code < 400:
        return None
    # Schemathesis keeps header names lower-case, each with a list of values.
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media_type != "application/problem+json":
        raise AssertionError(f"{response.status_code} answered as {media_type!r}, not application/problem+json")
    body = response.json()
    missing = {"type", "title", "status", "detail"} - set(body)
    if missing:
        raise AssertionError(f"problem document lacks {sorted(missing)}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} differs from HTTP {response.status_code}")
    return None
EOF

# fuzz STORE [DATABASE_URL]: serve the API from that store, sign one user in, and fuzz every operation.
fuzz() {
  local store=$1 database_url=${2:-} port base token status
  mkdir -p "$work/$store"
  echo "check-fuzz: $store store"
port="$("$python" -c 'from tests.support import free_port; print(free_port())')"
base="http://127.0.0.1:$port"

# OWASP-minimum argon2 keeps registrations cheap; the login limiter stays on (its 429 is in the description).
# An empty database_url selects the JSON store.
env -u DATABASE_URL -u METRICS_PORT -u PROMETHEUS_MULTIPROC_DIR \
  ${database_url:+DATABASE_URL="$database_url"} \
  DATA_FILE_PATH="$work/$store/data.json" \
  SECRET_KEY="$("$python" -c 'import secrets; print(secrets.token_hex(32))')" \
  ARGON2_TIME_COST=2 ARGON2_MEMORY_KIB=19456 ARGON2_PARALLELISM=1 \
  AUTH_MAX_FAILURES=5 LOG_LEVEL=warning \
  "$venv/bin/gunicorn" -c gunicorn.conf.py -b "127.0.0.1:$port" -w 4 src:application \
  >"$work/$store/server.log" 2>&1 &
server_pid=$!

# Register and sign in one user; its token goes to every request (the bearer routes need it).
token="$("$python" - "$base" <<'EOF'
import json
import sys
import time
import urllib.error
import urllib.request

base = sys.argv[1]
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("check-fuzz: the server did not answer /healthz in 60 s")
    time.sleep(0.2)


def post(path, body):
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


credentials = {"username": "fuzz.user", "password": "fuzzing password 1"}
post("/register", credentials)
print(post("/authenticate", credentials)["access_token"])
EOF
)" || { echo "check-fuzz: could not start the server or sign in" >&2; cat "$work/$store/server.log" >&2; return 1; }

# Run from the temp folder: Schemathesis and Hypothesis keep their caches in the working directory.
status=0
(cd "$work/$store" && PYTHONPATH="$work/hooks" SCHEMATHESIS_HOOKS=fuzz_hooks \
  "$venv/bin/schemathesis" run "$base/openapi.json" \
  --url "$base" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance,response_headers_conformance,problem_json_errors \
  --max-examples "${FUZZ_MAX_EXAMPLES:-100}" \
  --workers 2 \
  --seed 7 \
  --request-timeout 30 \
  --header "Authorization: Bearer $token") \
  || status=$?

if grep -q '"level": "error"' "$work/$store/server.log" || grep -q Traceback "$work/$store/server.log"; then
  echo "check-fuzz: the server logged errors while fuzzed:" >&2
  grep -E '"level": "error"|Traceback' "$work/$store/server.log" | head -20 >&2
  status=1
fi
stop_pid "$server_pid"
server_pid=""
return "$status"
}

# A throwaway PostgreSQL (the test suite's own launcher): loopback only, stopped by its pid on exit.
"$python" - >"$work/postgres.url" 2>"$work/postgres.log" <<'EOF' &
import signal
import sys
import time

from tests.support.postgres import new_server

server = new_server()
print(server.create_database("fuzz"), flush=True)
signal.signal(signal.SIGTERM, lambda *_: (server.stop(), server.destroy(), sys.exit(0)))
while True:
    time.sleep(1)
EOF
postgres_pid=$!
for _ in $(seq 1 120); do
  [ -s "$work/postgres.url" ] && break
  kill -0 "$postgres_pid" 2>/dev/null || break
  sleep 0.5
done
if [ ! -s "$work/postgres.url" ]; then
  echo "check-fuzz: PostgreSQL did not start" >&2
  cat "$work/postgres.log" >&2
  exit 1
fi

failed=()
fuzz json || failed+=(json)
fuzz postgresql "$(cat "$work/postgres.url")" || failed+=(postgresql)
if [ ${#failed[@]} -gt 0 ]; then
  echo "check-fuzz: FAILED (${failed[*]})" >&2
  exit 1
fi
echo "check-fuzz: passed (json, postgresql)"

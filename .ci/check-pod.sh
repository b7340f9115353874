#!/usr/bin/env bash
# Run the Deployment's pod as a kubelet runs it (init container, then the API with its probes), from the
# manifests of kube_config/ and of the selfhosted overlay, against a real PostgreSQL: .ci/check_pod.py says
# what is translated and what cannot run here.
#
# The image is built from this checkout as check-image.sh builds it (the classic builder reuses its layers, so
# after `make check-image` this takes seconds); a Docker daemon is started when none answers, and stopped at
# the end. Root only (docker, tmpfs mounts). Usage: .ci/check-pod.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."

python="${1:-.venv/bin/python}"
base_image="${BASE_IMAGE:-flask-api-base:bookworm}"
image="${IMAGE:-flask-api:check}"
work="$(mktemp -d /tmp/flask-api-pod.XXXXXX)"
dockerd_pid=""

cleanup() {
    for title in flask-api flask-api-builder; do
        docker image prune --force --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    echo "check-pod: starting dockerd (no iptables, no bridge: the pod uses the host network)"
    dockerd --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -n 30 "$work/dockerd.log"; exit 1; }
fi

.ci/base-image.sh "$base_image"
echo "check-pod: docker build against $base_image"
DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "PYTHON_IMAGE=$base_image" -t "$image" . \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; exit 1; }

"$python" .ci/check_pod.py --image "$image"

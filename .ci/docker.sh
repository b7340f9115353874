#!/usr/bin/env bash
# shellcheck disable=SC2154 # $work, $base_image and $image are set by the script that sources this
# Sourced by check-image.sh and check-pod.sh: the image built from this checkout against the stand-in base,
# with a Docker daemon started here when none answers (no iptables, no bridge: containers use the host
# network) and stopped by docker_cleanup. Needs $work (a scratch folder), $base_image and $image.
dockerd_pid=""

docker_build() {
    # docker_build NAME: NAME prefixes the lines it prints.
    local name=$1
    if ! docker info >/dev/null 2>&1; then
        echo "$name: starting dockerd (no iptables, no bridge: everything runs on the host network)"
        dockerd --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
        dockerd_pid=$!
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { tail -n 30 "$work/dockerd.log"; exit 1; }
    fi
    .ci/base-image.sh "$base_image"
    echo "$name: docker build against $base_image"
    # No buildx here: the classic builder. --network host lets pip reach the package index.
    DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "PYTHON_IMAGE=$base_image" -t "$image" . \
        >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; exit 1; }
}

docker_cleanup() {
    # The classic builder leaves the builder stage, and an earlier build of the tag, as untagged images.
    for title in flask-api flask-api-builder; do
        docker image prune --force --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    fi
}

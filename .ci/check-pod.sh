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
# shellcheck source=.ci/docker.sh
. .ci/docker.sh
trap docker_cleanup EXIT

docker_build check-pod

"$python" .ci/check_pod.py --image "$image"

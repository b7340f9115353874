#!/usr/bin/env bash
# Pin the image the EKS overlay deploys to one the CI workflow pushed, by digest:
#   kube_config/scripts/pin-image-eks.sh ghcr.io/<owner>/flask-api@sha256:<digest>
# The push job prints that reference (and this command) in its summary once the image is signed. A tag is
# refused: only the digest names the bytes that were scanned. Writes kube_config/overlays/eks/release.env.
set -euo pipefail

reference="${1:-}"
if [[ ! "$reference" =~ ^ghcr\.io/[a-z0-9][a-z0-9-]*/flask-api@sha256:[0-9a-f]{64}$ ]]; then
  echo "usage: $0 ghcr.io/<owner>/flask-api@sha256:<64 hex digits> (a digest, not a tag)" >&2
  exit 2
fi
# The all-zero digest is the template's placeholder (kube_config/argocd/components/until-pinned), never an image.
if [[ "$reference" == *"@sha256:0000000000000000000000000000000000000000000000000000000000000000" ]]; then
  echo "$reference is the placeholder digest, not a pushed image" >&2
  exit 2
fi
release_env="${RELEASE_ENV:-$(cd "$(dirname "$0")/../overlays/eks" && pwd)/release.env}"
printf 'IMAGE=%s\n' "$reference" >"$release_env"
echo "EKS overlay pinned to $reference ($release_env)."

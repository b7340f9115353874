#!/usr/bin/env bash
# Let EKS pull a private GHCR package: create or replace the Secret ghcr-pull that the EKS overlay's service
# accounts list in imagePullSecrets, in each namespace that runs the API's image (the API's, and the
# migration Job's). The token (a GitHub token with read:packages only) is read from standard input, never
# from a command line:
#   kube_config/scripts/create-pull-secret-eks.sh <github-user> < token-file
# Not needed when the package is public.
set -euo pipefail

namespaces=(flask-api flask-api-migrate)
user="${1:?usage: create-pull-secret-eks.sh GITHUB_USER < TOKEN_FILE}"
token="$(cat)"
[ -n "$token" ] || { echo "create-pull-secret-eks.sh: no token on standard input" >&2; exit 2; }

config="$(USER_NAME="$user" python3 -c '
import base64, json, os, sys
user, token = os.environ["USER_NAME"], sys.stdin.read().strip()
auth = base64.b64encode(f"{user}:{token}".encode()).decode()
print(json.dumps({"auths": {"ghcr.io": {"auth": auth}}}))
' <<<"$token")"
for namespace in "${namespaces[@]}"; do
  kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace" >/dev/null
  kubectl -n "$namespace" create secret generic ghcr-pull --type=kubernetes.io/dockerconfigjson \
    --from-file=.dockerconfigjson=<(printf '%s' "$config") --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  echo "Secret ghcr-pull written in $namespace."
done

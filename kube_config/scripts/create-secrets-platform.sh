#!/usr/bin/env bash
# Create the Secrets of the platform components (kube_config/platform) before the first sync: random values,
# made here and never written anywhere else, passed to kubectl through file descriptors (never on a command
# line, where ps would show them).
#   monitoring/grafana-admin:         admin-user, admin-password (Grafana's login)
#   opensearch/opensearch-admin:      password (OpenSearch's initial admin password)
#   logging/opensearch-credentials:   OPENSEARCH_USER, OPENSEARCH_PASSWORD (Fluent Bit's login to OpenSearch)
# Idempotent: each Secret that exists is kept and only the missing ones are created; Fluent Bit's login is
# always derived from opensearch-admin, which OpenSearch reads only when it first initialises its security.
# The Alertmanager receivers (monitoring/alertmanager-receivers) hold your own webhook URLs: docs/kubernetes.md.
set -euo pipefail

ensure_namespace() {
  kubectl get namespace "$1" >/dev/null 2>&1 || kubectl create namespace "$1" >/dev/null
}

exists() {
  kubectl -n "$1" get secret "$2" >/dev/null 2>&1
}

for namespace in monitoring opensearch logging; do
  ensure_namespace "$namespace"
done

if exists monitoring grafana-admin; then
  echo "Secret monitoring/grafana-admin exists: kept."
else
  kubectl -n monitoring create secret generic grafana-admin \
    --from-file=admin-user=<(printf admin) \
    --from-file=admin-password=<(openssl rand -hex 24 | tr -d '\n') >/dev/null
  echo "Secret monitoring/grafana-admin created."
fi

if exists opensearch opensearch-admin; then
  echo "Secret opensearch/opensearch-admin exists: kept."
else
  # OpenSearch refuses a weak initial password: it asks for upper and lower case, a digit and a symbol.
  kubectl -n opensearch create secret generic opensearch-admin \
    --from-file=password=<(printf '%sAa1!' "$(openssl rand -hex 24)") >/dev/null
  echo "Secret opensearch/opensearch-admin created."
fi

if exists logging opensearch-credentials; then
  echo "Secret logging/opensearch-credentials exists: kept."
else
  opensearch_password="$(kubectl -n opensearch get secret opensearch-admin -o 'jsonpath={.data.password}' |
    base64 -d)"
  kubectl -n logging create secret generic opensearch-credentials \
    --from-file=OPENSEARCH_USER=<(printf admin) \
    --from-file=OPENSEARCH_PASSWORD=<(printf '%s' "$opensearch_password") >/dev/null
  echo "Secret logging/opensearch-credentials created."
fi

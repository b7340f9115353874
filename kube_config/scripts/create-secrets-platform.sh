#!/usr/bin/env bash
# Create the Secrets of the platform components (kube_config/platform) before the first sync: random values,
# made here and never written anywhere else. Existing Secrets are kept.
#   monitoring/grafana-admin:         admin-user, admin-password (Grafana's login)
#   opensearch/opensearch-admin:      password (OpenSearch's initial admin password)
#   logging/opensearch-credentials:   OPENSEARCH_USER, OPENSEARCH_PASSWORD (Fluent Bit's login to OpenSearch)
# The Alertmanager receivers (monitoring/alertmanager-receivers) hold your own webhook URLs: docs/gitops.md.
set -euo pipefail

ensure_namespace() {
  kubectl get namespace "$1" >/dev/null 2>&1 || kubectl create namespace "$1"
}

exists() {
  kubectl -n "$1" get secret "$2" >/dev/null 2>&1
}

ensure_namespace monitoring
if exists monitoring grafana-admin; then
  echo "Secret grafana-admin exists in monitoring: kept."
else
  kubectl -n monitoring create secret generic grafana-admin \
    --from-literal=admin-user=admin \
    --from-literal=admin-password="$(openssl rand -hex 24)"
fi

ensure_namespace opensearch
ensure_namespace logging
if exists opensearch opensearch-admin; then
  echo "Secret opensearch-admin exists in opensearch: kept."
else
  # OpenSearch refuses a weak initial password: it asks for upper and lower case, a digit and a symbol.
  opensearch_password="$(openssl rand -hex 24)Aa1!"
  kubectl -n opensearch create secret generic opensearch-admin \
    --from-literal=password="$opensearch_password"
  kubectl -n logging delete secret opensearch-credentials --ignore-not-found
  kubectl -n logging create secret generic opensearch-credentials \
    --from-literal=OPENSEARCH_USER=admin \
    --from-literal=OPENSEARCH_PASSWORD="$opensearch_password"
fi
echo "Platform Secrets present in monitoring, opensearch and logging."

#!/usr/bin/env bash
# Create the Secrets of the platform components (kube_config/platform) before the first sync: random values,
# made here and never written anywhere else, passed to kubectl through file descriptors (never on a command
# line, where ps would show them).
#   monitoring/grafana-admin:             admin-user, admin-password (Grafana's login)
#   opensearch/opensearch-admin:          password (the password of OpenSearch's user admin)
#   logging/opensearch-credentials:       OPENSEARCH_USER, OPENSEARCH_PASSWORD (Fluent Bit's login to
#                                         OpenSearch: user fluentbit, role fluent_bit_writer)
#   opensearch/opensearch-internal-users: internal_users.yml (the security plugin's users admin and fluentbit
#                                         with the bcrypt hashes of the two passwords above)
# Idempotent: each Secret that exists is kept and only the missing ones are created; the users file is always
# derived from the two passwords. OpenSearch reads it only when it first initialises its security index: to
# change a password later, see docs/gitops.md. Needs htpasswd (Debian/Ubuntu: apt-get install apache2-utils).
# The Alertmanager receivers (monitoring/alertmanager-receivers) hold your own webhook URLs: docs/kubernetes.md.
set -euo pipefail

command -v htpasswd >/dev/null || {
  echo "create-secrets-platform.sh: htpasswd not found (apt-get install apache2-utils)" >&2
  exit 1
}

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
  kubectl -n logging create secret generic opensearch-credentials \
    --from-file=OPENSEARCH_USER=<(printf fluentbit) \
    --from-file=OPENSEARCH_PASSWORD=<(printf '%sAa1!' "$(openssl rand -hex 24)") >/dev/null
  echo "Secret logging/opensearch-credentials created."
fi

# The bcrypt hash (cost 12) of the password in namespace $1, Secret $2, key $3, the password read by htpasswd
# from its standard input.
password_hash() {
  kubectl -n "$1" get secret "$2" -o "jsonpath={.data.$3}" | base64 -d | htpasswd -niBC 12 user | cut -d: -f2-
}

if exists opensearch opensearch-internal-users; then
  echo "Secret opensearch/opensearch-internal-users exists: kept."
else
  admin_hash="$(password_hash opensearch opensearch-admin password)"
  fluentbit_hash="$(password_hash logging opensearch-credentials OPENSEARCH_PASSWORD)"
  kubectl -n opensearch create secret generic opensearch-internal-users --from-file=internal_users.yml=<(
    cat <<YAML
_meta:
  type: internalusers
  config_version: 2
admin:
  hash: "$admin_hash"
  reserved: true
  description: Administrator (role all_access)
fluentbit:
  hash: "$fluentbit_hash"
  reserved: false
  description: Fluent Bit (role fluent_bit_writer, kube-* indices only)
YAML
  ) >/dev/null
  echo "Secret opensearch/opensearch-internal-users created."
fi

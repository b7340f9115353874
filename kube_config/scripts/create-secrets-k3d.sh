#!/usr/bin/env bash
# Create the Secrets of flask-api for k3d (or any cluster that runs the in-cluster PostgreSQL of
# kube_config/30-postgres.yaml): random values, made here and never written anywhere else.
#   flask-api-postgres:  POSTGRES_PASSWORD (the superuser flask_api, owner of the schema)
#   flask-api-db-admin:  url, password     (the same user, for the migration init container)
#   flask-api-db:        url, password     (the application's own role flask_api_app, created by the migration)
#   flask-api-secrets:   SECRET_KEY
#   (flask-api-secrets-previous: SECRET_KEY_PREVIOUS, during a signing-key rotation only; optional, not made
#    here: docs/security.md#rotating-the-signing-key)
# Idempotent: each Secret that exists is kept and only the missing ones are created, so a second run, or a run
# after one Secret was deleted, completes the set. PostgreSQL sets its password only when it creates its data
# directory: flask-api-db-admin is always derived from flask-api-postgres, never from a new value.
# Delete the Secrets and the PVC to start over.
set -euo pipefail

namespace=flask-api
service=flask-api-postgres:5432
database=flask_api

kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace" >/dev/null

exists() { kubectl -n "$namespace" get secret "$1" >/dev/null 2>&1; }

# create NAME KEY=FILE...: one Secret from values passed through file descriptors (never a command line).
create() {
  local name="$1"
  shift
  local args=()
  for pair in "$@"; do args+=("--from-file=$pair"); done
  kubectl -n "$namespace" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  kubectl -n "$namespace" label --overwrite secret "$name" \
    app.kubernetes.io/name=flask-api app.kubernetes.io/part-of=flask-api >/dev/null
  echo "Secret $name created in $namespace."
}

# Hex passwords need no escaping in a URL or a file.
if exists flask-api-postgres; then
  echo "Secret flask-api-postgres exists in $namespace: kept."
else
  create flask-api-postgres POSTGRES_PASSWORD=<(openssl rand -hex 24 | tr -d '\n')
fi

if exists flask-api-db-admin; then
  echo "Secret flask-api-db-admin exists in $namespace: kept."
else
  postgres_password="$(kubectl -n "$namespace" get secret flask-api-postgres -o jsonpath='{.data.POSTGRES_PASSWORD}' |
    base64 -d)"
  create flask-api-db-admin url=<(printf 'postgresql://flask_api@%s/%s' "$service" "$database") \
    password=<(printf '%s' "$postgres_password")
fi

if exists flask-api-db; then
  echo "Secret flask-api-db exists in $namespace: kept."
else
  create flask-api-db url=<(printf 'postgresql://flask_api_app@%s/%s' "$service" "$database") \
    password=<(openssl rand -hex 24 | tr -d '\n')
fi

if exists flask-api-secrets; then
  echo "Secret flask-api-secrets exists in $namespace: kept."
else
  create flask-api-secrets SECRET_KEY=<(openssl rand -hex 32 | tr -d '\n')
fi

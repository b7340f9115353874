#!/usr/bin/env bash
# Create the Secrets of flask-api for k3d (or any cluster that runs the in-cluster PostgreSQL of
# kube_config/30-postgres.yaml): random values, made here and never written anywhere else.
#   flask-api-postgres: POSTGRES_PASSWORD
#   flask-api-secrets:  SECRET_KEY, DATABASE_URL (pointing at the Service flask-api-postgres)
# Existing Secrets are kept: PostgreSQL sets its password only when it creates its data directory, so a new
# password would lock the API out of an existing volume. Delete both Secrets and the PVC to start over.
set -euo pipefail

namespace=flask-api

kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"

if kubectl -n "$namespace" get secret flask-api-postgres flask-api-secrets >/dev/null 2>&1; then
  echo "Secrets flask-api-postgres and flask-api-secrets exist in $namespace: kept."
  exit 0
fi

# Hex passwords need no escaping in a URL.
postgres_password="$(openssl rand -hex 24)"

kubectl -n "$namespace" create secret generic flask-api-postgres \
  --from-literal=POSTGRES_PASSWORD="$postgres_password"

kubectl -n "$namespace" create secret generic flask-api-secrets \
  --from-literal=SECRET_KEY="$(openssl rand -hex 32)" \
  --from-literal=DATABASE_URL="postgresql://flask_api:${postgres_password}@flask-api-postgres:5432/flask_api"

kubectl -n "$namespace" label secret flask-api-postgres flask-api-secrets \
  app.kubernetes.io/name=flask-api app.kubernetes.io/part-of=flask-api >/dev/null
echo "Secrets flask-api-postgres and flask-api-secrets created in $namespace."

#!/usr/bin/env bash
# Create the Secret flask-api-secrets on EKS from the OpenTofu outputs of infrastructure/:
#   SECRET_KEY    random, made here
#   DATABASE_URL  the RDS instance (db_endpoint, db_port, db_name) with the master user's credentials, read
#                 from the Secrets Manager secret that RDS manages (db_master_secret_arn), TLS required
# Needs: tofu (or TOFU=terraform), aws (credentials for the account), python3, kubectl on the EKS context.
# Run it again after RDS rotates the master password (then `kubectl -n flask-api rollout restart
# deployment/flask-api`); SECRET_KEY is kept, so issued tokens stay valid.
set -euo pipefail

namespace=flask-api
tofu_bin="${TOFU:-tofu}"
infra_dir="${INFRA_DIR:-$(cd "$(dirname "$0")/../../infrastructure" && pwd)}"

output() { "$tofu_bin" -chdir="$infra_dir" output -raw "$1"; }

region="$(output region)"
db_endpoint="$(output db_endpoint)"
db_port="$(output db_port)"
db_name="$(output db_name)"
db_secret_arn="$(output db_master_secret_arn)"

credentials="$(aws secretsmanager get-secret-value --region "$region" --secret-id "$db_secret_arn" \
  --query SecretString --output text)"

# The generated password may hold any character: build the URL with proper escaping. The credentials go to
# python3 on standard input, never on a command line.
database_url="$(
  DB_ENDPOINT="$db_endpoint" DB_PORT="$db_port" DB_NAME="$db_name" python3 -c '
import json, os, sys
from urllib.parse import quote
secret = json.load(sys.stdin)
print("postgresql://%s:%s@%s:%s/%s?sslmode=require" % (
    quote(secret["username"], safe=""), quote(secret["password"], safe=""),
    os.environ["DB_ENDPOINT"], os.environ["DB_PORT"], quote(os.environ["DB_NAME"], safe="")))
' <<<"$credentials"
)"

secret_key="$(kubectl -n "$namespace" get secret flask-api-secrets -o jsonpath='{.data.SECRET_KEY}' 2>/dev/null \
  | base64 -d || true)"
if [ -z "$secret_key" ]; then
  secret_key="$(openssl rand -hex 32)"
fi

kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
# The values reach kubectl through file descriptors (printf is a shell builtin): never a command line or a
# file on disk.
kubectl -n "$namespace" create secret generic flask-api-secrets \
  --from-file=SECRET_KEY=<(printf '%s' "$secret_key") \
  --from-file=DATABASE_URL=<(printf '%s' "$database_url") \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "Secret flask-api-secrets written in $namespace (DATABASE_URL to $db_endpoint:$db_port/$db_name)."

#!/usr/bin/env bash
# Static checks of the OpenTofu configuration under infrastructure/:
#   1. formatting (terraform fmt, or tofu fmt where OpenTofu is installed);
#   2. checkov with zero failed checks and a non-zero passed count (a crash or an
#      empty scan also prints "0 failed");
#   3. no state, backend config or tfvars file tracked by git.
# `init` / `validate` need the module registry and run in the GitHub workflow.
set -euo pipefail

cd "$(dirname "$0")/.."

SCANNERS_BIN="${SCANNERS_BIN:-.venv-scanners/bin}"
CHECKOV="${SCANNERS_BIN}/checkov"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. formatting ------------------------------------------------------------
if command -v tofu >/dev/null 2>&1; then
  fmt_tool=tofu
elif command -v terraform >/dev/null 2>&1; then
  fmt_tool=terraform
else
  echo "check-infra: neither tofu nor terraform is on PATH" >&2
  exit 1
fi
# An empty CLI config keeps terraform from warning about a missing ~/.terraformrc.
: >"$work/cli.tfrc"
if ! TF_CLI_CONFIG_FILE="$work/cli.tfrc" CHECKPOINT_DISABLE=1 \
  "$fmt_tool" fmt -check -recursive -diff infrastructure; then
  echo "check-infra: run '$fmt_tool fmt -recursive infrastructure'" >&2
  exit 1
fi
echo "check-infra: $fmt_tool fmt -check -recursive infrastructure: ok"

# --- 2. checkov ---------------------------------------------------------------
if [[ ! -x "$CHECKOV" ]]; then
  echo "check-infra: $CHECKOV not found (build the scanner venv from .ci/requirements-scanners.txt)" >&2
  exit 1
fi
status=0
"$CHECKOV" --directory infrastructure --framework terraform --skip-download \
  --compact --quiet >"$work/checkov.out" 2>"$work/checkov.err" || status=$?
cat "$work/checkov.out"
summary="$(grep -E '^Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$work/checkov.out" || true)"
if [[ -z "$summary" ]]; then
  echo "check-infra: checkov printed no summary (exit $status); its stderr:" >&2
  cat "$work/checkov.err" >&2
  exit 1
fi
passed="$(sed -E 's/^Passed checks: ([0-9]+).*/\1/' <<<"$summary")"
failed="$(sed -E 's/.*Failed checks: ([0-9]+).*/\1/' <<<"$summary")"
if [[ "$status" -ne 0 || "$failed" -ne 0 || "$passed" -eq 0 ]]; then
  echo "check-infra: checkov failed (exit $status, $summary)" >&2
  exit 1
fi
echo "check-infra: checkov: $summary"

# --- 3. nothing secret or account-specific is tracked ---------------------------
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  tracked="$(git ls-files -- infrastructure |
    grep -E '(\.tfstate(\..*)?|(^|/)backend\.hcl|\.tfvars|\.tfplan)$' || true)"
  if [[ -n "$tracked" ]]; then
    echo "check-infra: these files must not be committed:" >&2
    echo "$tracked" >&2
    exit 1
  fi
fi
echo "check-infra: ok"

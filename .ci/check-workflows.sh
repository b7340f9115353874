#!/usr/bin/env bash
# Checks of the GitHub Actions workflows and the repository's YAML lint rules:
#   actionlint on every workflow, zizmor (offline: no GitHub API here) with no finding, checkov
#   (github_actions) with zero failures and a non-zero passed count, yamllint on the pipeline's own files,
#   bash -n and shellcheck on its scripts.
# The binaries come from $SCANNERS_BIN (default .venv-scanners/bin, built from .ci/requirements-scanners.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

scanners_bin="${SCANNERS_BIN:-.venv-scanners/bin}"
for tool in actionlint zizmor checkov yamllint shellcheck; do
  if [ ! -x "$scanners_bin/$tool" ]; then
    echo "check-workflows: $scanners_bin/$tool not found (make scanners builds .venv-scanners)" >&2
    exit 1
  fi
done

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if [ ${#workflows[@]} -eq 0 ]; then
  echo "check-workflows: no workflow under .github/workflows" >&2
  exit 1
fi

echo "check-workflows: actionlint ${workflows[*]}"
"$scanners_bin/actionlint" "${workflows[@]}"

# zizmor exits non-zero on any finding that is not suppressed in place (each suppression says why).
echo "check-workflows: zizmor --offline .github/"
"$scanners_bin/zizmor" --offline --no-progress .github/

# checkov prints "0 failed" both after a clean scan and after one that read nothing (its workflow schema
# rejects some valid keys and then skips the whole file silently): the passed count has to be non-zero too.
echo "check-workflows: checkov --framework github_actions"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
checkov_rc=0
"$scanners_bin/checkov" --framework github_actions --skip-download --compact -d .github >"$report" 2>&1 ||
  checkov_rc=$?
summary="$(grep -Eo 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$report" || true)"
passed="$(sed -nE 's/^Passed checks: ([0-9]+).*/\1/p' <<<"$summary")"
failed="$(sed -nE 's/.*Failed checks: ([0-9]+).*/\1/p' <<<"$summary")"
if [ "$checkov_rc" -ne 0 ] || [ -z "$summary" ] || [ "${passed:-0}" -eq 0 ] || [ "${failed:-1}" -ne 0 ]; then
  cat "$report" >&2
  echo "check-workflows: checkov failed (exit $checkov_rc; ${summary:-no summary: nothing was scanned})" >&2
  exit 1
fi
echo "check-workflows: checkov $summary"

echo "check-workflows: yamllint"
"$scanners_bin/yamllint" --strict -c .yamllint.yaml .github .pre-commit-config.yaml .yamllint.yaml

# The workflow's own scripts; actionlint already runs shellcheck on the inline `run:` blocks.
echo "check-workflows: scripts"
for script in .github/scripts/*.sh .ci/check-workflows.sh .ci/run .ci/*.sh; do
  bash -n "$script"
  [ -x "$script" ] || { echo "check-workflows: $script is not executable" >&2; exit 1; }
done
"$scanners_bin/shellcheck" .github/scripts/*.sh .ci/run .ci/*.sh

echo "check-workflows: passed"

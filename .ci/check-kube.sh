#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (kube_config/): schema validation, checkov, kustomize renders,
# Prometheus rules and their unit tests. There is no cluster here; everything that can be checked without
# one is checked. Tools: kubectl (kustomize), promtool, and the scanners of .venv-scanners.
set -euo pipefail

cd "$(dirname "$0")/.."
SCANNERS_BIN="${SCANNERS_BIN:-.venv-scanners/bin}"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.32.0}"
PROMTOOL="${PROMTOOL:-promtool}"

for tool in "$SCANNERS_BIN/kubernetes-validate" "$SCANNERS_BIN/checkov" "$SCANNERS_BIN/python" "$SCANNERS_BIN/shellcheck"; do
  [ -x "$tool" ] || { echo "check-kube: $tool not found (create .venv-scanners from .ci/requirements-scanners.txt)" >&2; exit 1; }
done
command -v kubectl >/dev/null || { echo "check-kube: kubectl not found" >&2; exit 1; }
command -v "$PROMTOOL" >/dev/null || { echo "check-kube: promtool not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

# kubernetes-validate only warns on a kind it has no schema for (a misspelled kind passes): every warning
# fails here, except the custom resources whose fields tests/kube and tests/gitops check instead: the
# Prometheus Operator's, the Traefik and k3s kinds of the k3d overlay, the External Secrets kinds of the EKS
# overlay, Argo CD's Application and AppProject (validated against the CRDs of the vendored Argo CD install by
# tests/gitops/test_argocd_install.py), CloudNativePG's Cluster, ScheduledBackup and the Barman Cloud plugin's
# ObjectStore (against the vendored upstream CRDs by tests/gitops/test_cloudnativepg_backup.py), cert-manager's
# Certificate, Issuer and ClusterIssuer (by tests/gitops/test_certificates.py), policy-controller's
# ClusterImagePolicy of the EKS overlays (by tests/gitops/test_image_signatures.py): kubernetes-validate takes
# no CRD.
validate() {
  local label="$1"
  shift
  local out
  out="$("$SCANNERS_BIN/kubernetes-validate" -k "$KUBERNETES_VERSION" --strict --quiet "$@" 2>&1)" || {
    printf '%s\n' "$out"
    echo "check-kube: schema validation failed: $label" >&2
    return 1
  }
  local unexpected
  unexpected="$(printf '%s\n' "$out" | grep -v -E \
    -e '^$' \
    -e 'kind (PodMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1 ' \
    -e 'kind (ExternalSecret|SecretStore) with api version external-secrets\.io/v1 ' \
    -e 'kind Password with api version generators\.external-secrets\.io/v1alpha1 ' \
    -e 'kind Middleware with api version traefik\.io/v1alpha1 ' \
    -e 'kind HelmChartConfig with api version helm\.cattle\.io/v1 ' \
    -e 'kind (Cluster|ScheduledBackup) with api version postgresql\.cnpg\.io/v1 ' \
    -e 'kind ObjectStore with api version barmancloud\.cnpg\.io/v1 ' \
    -e 'kind (Certificate|Issuer|ClusterIssuer) with api version cert-manager\.io/v1 ' \
    -e 'kind ClusterImagePolicy with api version policy\.sigstore\.dev/v1beta1 ' \
    -e 'kind (Application|AppProject) with api version argoproj\.io/v1alpha1 ' || true)"
  if [ -n "$unexpected" ]; then
    printf '%s\n' "$unexpected"
    echo "check-kube: schema validation warned: $label" >&2
    return 1
  fi
  echo "valid: $label"
}

# checkov exits 0 on a crash or an empty scan too: require its exit code, zero failures and passed checks.
scan() {
  local label="$1" dir="$2" out passed failed
  out="$work/checkov-$(echo "$label" | tr -c 'a-zA-Z0-9' '_').txt"
  if ! "$SCANNERS_BIN/checkov" --skip-download --quiet --compact --framework kubernetes -d "$dir" \
    --skip-path overlays --skip-path monitoring --skip-path components --skip-path argocd --skip-path platform \
    --skip-path logging >"$out" 2>&1; then
    cat "$out"
    echo "check-kube: checkov failed: $label" >&2
    return 1
  fi
  passed="$(sed -n 's/^Passed checks: \([0-9]*\), Failed checks: \([0-9]*\), Skipped checks: \([0-9]*\).*/\1/p' "$out")"
  failed="$(sed -n 's/^Passed checks: \([0-9]*\), Failed checks: \([0-9]*\), Skipped checks: \([0-9]*\).*/\2/p' "$out")"
  if [ -z "$passed" ] || [ "$passed" -eq 0 ] || [ "$failed" != 0 ]; then
    cat "$out"
    echo "check-kube: checkov passed=${passed:-none} failed=${failed:-none}: $label" >&2
    return 1
  fi
  echo "checkov $label: $(grep '^Passed checks' "$out")"
}

# Every kustomization of the repository, found by a walk so that a new overlay, environment or folder is
# rendered and validated without being listed here. Built as Argo CD builds them (kustomize.buildOptions in
# kube_config/argocd/install/argocd-cm.yaml). A Component cannot build alone: it is rendered inside the
# kustomizations that include it (tests/gitops/test_kustomizations.py builds the ones none includes).
mapfile -t KUSTOMIZATIONS < <(find . \( -path './.*' -o -name build -o -name htmlcov -o -name node_modules \) -prune \
  -o \( -name kustomization.yaml -o -name kustomization.yml -o -name Kustomization \) -print | sed 's|^\./||' | sort)
[ ${#KUSTOMIZATIONS[@]} -gt 0 ] || { echo "check-kube: no kustomization found" >&2; exit 1; }
# Where a folder's render goes: kube_config/overlays/k3d -> $work/rendered/kube_config_overlays_k3d.yaml
rendered() { printf '%s/rendered/%s.yaml' "$work" "$(printf '%s' "$1" | tr '/' '_')"; }
mkdir -p "$work/rendered"
BUILT=()

step "kustomize renders (${#KUSTOMIZATIONS[@]} kustomizations)"
for file in "${KUSTOMIZATIONS[@]}"; do
  folder="$(dirname "$file")"
  if grep -qE '^kind: *Component *$' "$file"; then
    echo "component: $folder (rendered by the kustomizations that include it)"
    continue
  fi
  kubectl kustomize --load-restrictor LoadRestrictionsNone "$folder" >"$(rendered "$folder")"
  BUILT+=("$folder")
  echo "rendered: $folder ($(grep -c '^kind:' "$(rendered "$folder")") objects)"
done

step "kubernetes-validate -k $KUBERNETES_VERSION --strict"
validate "kube_config/*.yaml" kube_config/*.yaml
for folder in "${BUILT[@]}"; do
  validate "$folder (rendered)" "$(rendered "$folder")"
done
validate "argocd/roots" kube_config/argocd/roots/*.yaml

step "checkov"
scan "kube_config" kube_config
for overlay in k3d eks; do
  mkdir -p "$work/checkov-$overlay"
  cp "$(rendered "kube_config/overlays/$overlay")" "$work/checkov-$overlay/rendered.yaml"
  scan "overlays/$overlay (rendered)" "$work/checkov-$overlay"
done
# The environments in one checkov run (each start costs about 10 s); a finding names its file.
ENVIRONMENTS=(dev staging prod selfhosted)
mkdir -p "$work/environments"
for env in "${ENVIRONMENTS[@]}"; do
  cp "$(rendered "kube_config/overlays/$env")" "$work/environments/$env.yaml"
done
scan "overlays/${ENVIRONMENTS[*]} (rendered)" "$work/environments"

step "promtool"
mkdir -p "$work/monitoring"
"$SCANNERS_BIN/python" - kube_config/monitoring/prometheusrule.yaml "$work/monitoring/flask-api.rules.yml" <<'PY'
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as source:
    rule = yaml.safe_load(source)
with open(sys.argv[2], "w", encoding="utf-8") as target:
    yaml.safe_dump(rule["spec"], target, sort_keys=False)
PY
cp kube_config/monitoring/prometheusrule-tests.yaml "$work/monitoring/"
"$PROMTOOL" check rules "$work/monitoring/flask-api.rules.yml"
(cd "$work/monitoring" && "$PROMTOOL" test rules prometheusrule-tests.yaml)

step "secret scripts"
for script in kube_config/scripts/*.sh; do
  bash -n "$script"
  [ -x "$script" ] || { echo "check-kube: $script is not executable" >&2; exit 1; }
done
"$SCANNERS_BIN/shellcheck" kube_config/scripts/*.sh .ci/check-kube.sh
echo "shellcheck: clean"

echo
echo "check-kube: all checks passed"

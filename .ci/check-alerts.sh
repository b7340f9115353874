#!/usr/bin/env bash
# The alerting path of kube_config/monitoring, checked with the real tools (tests/alerting):
#   amtool check-config and `amtool config routes test` for every alert of prometheusrule.yaml, and the end-to-end
#   test: Prometheus with the project's rules scraping gunicorn, Alertmanager with the committed routing, a local
#   Slack stand-in. Debian's prometheus and prometheus-alertmanager are installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interpreter of the project virtualenv (make check-alerts passes its own).
python="${1:-.venv/bin/python}"

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  # The packages start daemons of their own where systemd runs; the tests start the ones they use.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl stop prometheus prometheus-alertmanager || true
  fi
fi
prometheus --version 2>&1 | head -n 1
amtool --version 2>&1 | head -n 1

# CI=true turns a missing tool into a failure instead of a skip.
CI="${CI:-true}" "$python" -m pytest tests/alerting -q -p no:cacheprovider

#!/usr/bin/env bash
# Static checks of the deployment files. Run from the repository root
# (.ci/run calls it before `cargo test`); needs promtool (Debian package
# `prometheus`) and docker-compose. tests/deploy_manifests.rs checks the
# metric names and the dashboard queries against the code.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  # Runs a check quietly; prints its output only when it fails.
  local name=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    echo "ok   $name"
  else
    echo "FAIL $name"
    echo "$out"
    exit 1
  fi
}

step "promtool check config" promtool check config deploy/prometheus/prometheus.yml
step "promtool check rules" promtool check rules deploy/prometheus/rules.yml
step "promtool test rules" promtool test rules deploy/prometheus/rules_test.yml
step "docker-compose config" docker-compose -f docker-compose.yml config -q
step "grafana dashboard json" python3 -m json.tool deploy/grafana/dashboards/churn-scorer.json
if command -v kubectl >/dev/null; then
  step "kustomize build deploy/k8s" kubectl kustomize deploy/k8s
fi

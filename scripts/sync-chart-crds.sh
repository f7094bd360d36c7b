#!/usr/bin/env bash
# Copy what the Helm chart must carry verbatim from its single source in the repository:
#   crds/*.yaml             -> charts/cloudpilot-operator/crds/   (Helm installs crds/ as is)
#   docs/argocd-health.lua  -> charts/cloudpilot-operator/files/  (printed by NOTES.txt)
# Run it after changing either; tests/unit/test_chart.py fails while the copies differ.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/cloudpilot-operator
rm -f "$chart"/crds/*.yaml
cp crds/*.yaml "$chart/crds/"
cp docs/argocd-health.lua "$chart/files/argocd-health.lua"
echo "synced: $(cd "$chart" && ls crds/*.yaml files/argocd-health.lua | tr '\n' ' ')"

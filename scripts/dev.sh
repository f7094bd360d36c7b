#!/usr/bin/env bash
# The README's two commands. Needs only python3 (3.11 or later, with venv: on Debian and
# Ubuntu the python3-venv package) and bash on a fresh machine.
#
#   bash scripts/dev.sh demo   set up .venv and run the operator end to end on local emulators
#   bash scripts/dev.sh test   set up .venv and the test peers, then run the whole test suite
#
# Idempotent: a second run reuses .venv and the peers. VENV overrides the venv's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# Fails early with the fix where `python3 -m venv` or pip would fail later with a confusing
# message: an old Python (pip's resolver finds no version of the project for it) or, on
# Debian and Ubuntu, no ensurepip (it comes with python3-venv / python3.X-venv, not python3).
# $1: the interpreter to check; "new" as $2 when it is to create the venv.
check_python() {
    local python=$1 creating=${2:-} version
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "dev.sh: $python not found: install Python 3.11 or later" >&2
        return 1
    fi
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
        echo "dev.sh: $python does not run" >&2
        return 1
    }
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        if [ "$creating" = new ]; then
            echo "dev.sh: CloudPilot needs Python 3.11 or later; $python is $version." \
                "Install 3.11 or later, then make it python3 or create the venv with it" \
                "(e.g. python3.11 -m venv $VENV) and run this again." >&2
        else
            echo "dev.sh: $python is Python $version; CloudPilot needs 3.11 or later." \
                "Remove $VENV and run again with a python3 that is 3.11 or later." >&2
        fi
        return 1
    fi
    if [ "$creating" = new ] && ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
        echo "dev.sh: $python cannot create a venv: its ensurepip module is missing." \
            "On Debian or Ubuntu: sudo apt-get install python3-venv (python$version-venv" \
            "if python3 is not the distribution's own Python)." >&2
        return 1
    fi
}

setup_venv() {
    local extra=$1
    if [ ! -x "$VENV/bin/python" ]; then
        check_python python3 new
        python3 -m venv "$VENV"
    else
        check_python "$VENV/bin/python"
    fi
    # A recent pip resolves moto + kubernetes in seconds; the 23.x that ships with
    # Python 3.11 backtracks for minutes. constraints.txt pins what CI tested.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U 'pip>=24'
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c constraints.txt -e ".[$extra]"
}

case "${1:-}" in
    demo)
        setup_venv demo
        exec "$VENV/bin/cloudpilot" demo
        ;;
    test)
        # Real protocol peers that do not come from PyPI into this venv: each script is
        # idempotent and says what it installed. Tests that need a missing peer skip with a
        # reason locally and fail under CI=true.
        # The Go builds (kube-apiserver for the real control plane, promtool for the alert
        # rules) come from the Go module proxy and are cached: minutes of compiling the first
        # time, nothing after. They run in the background while the Python venvs install
        # (mostly downloads and unpacking), so a fresh machine pays for the two only once.
        go_log=$(mktemp)
        (
            for build in .ci/build-kube-apiserver.sh .ci/build-promtool.sh; do
                if [ -f "$build" ]; then
                    bash "$build" || echo "warning: $build failed; the tests that need it will say so"
                fi
            done
        ) >"$go_log" 2>&1 &
        go_builds=$!
        setup_venv test
        for peer in .ci/install-cloud-init.sh .ci/setup-openstack-peer.sh .ci/setup-diracx-peer.sh \
            .ci/install-helm.sh .ci/install-etcd.sh; do
            if [ -f "$peer" ]; then
                bash "$peer" || echo "warning: $peer failed; the tests that need it will say so" >&2
            fi
        done
        wait "$go_builds" || true
        cat "$go_log" >&2
        rm -f "$go_log"
        "$VENV/bin/ruff" check operator tests bench scripts/crdgen
        "$VENV/bin/ruff" format --check operator tests bench scripts/crdgen
        # The type gate: mypy --strict over the package and bench ([tool.mypy] in pyproject.toml).
        "$VENV/bin/mypy"
        shift
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test [pytest args]" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# The README's two commands. Needs only python3 (and bash) on a fresh machine.
#
#   bash scripts/dev.sh demo   set up .venv and run the operator end to end on local emulators
#   bash scripts/dev.sh test   set up .venv and the test peers, then run the whole test suite
#
# Idempotent: a second run reuses .venv and the peers. VENV overrides the venv's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

setup_venv() {
    local extra=$1
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
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
        setup_venv test
        # Real protocol peers that do not come from PyPI into this venv: each script is
        # idempotent and says what it installed. Tests that need a missing peer skip with a
        # reason locally and fail under CI=true.
        for peer in .ci/install-cloud-init.sh .ci/setup-openstack-peer.sh .ci/install-helm.sh; do
            if [ -f "$peer" ]; then
                bash "$peer" || echo "warning: $peer failed; the tests that need it will say so" >&2
            fi
        done
        "$VENV/bin/ruff" check operator tests bench
        "$VENV/bin/ruff" format --check operator tests bench
        shift
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test [pytest args]" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# etcd for the suite's real Kubernetes control plane (tests/support/apiserver.py): Debian's
# etcd-server (3.4, which kube-apiserver 1.36 serves from fine). Idempotent. The package's
# own service is not wanted: the tests start etcd on a free loopback port of their own.
set -euo pipefail
if command -v etcd >/dev/null 2>&1; then
    echo "etcd: $(etcd --version | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-etcd: no apt-get; install etcd 3.4 or later and put it on PATH" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
# policy-rc.d 101: do not start the packaged service (it would take port 2379).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
echo "etcd: $(etcd --version | head -n 1)"

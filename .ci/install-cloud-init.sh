#!/bin/sh
# Install Debian's cloud-init, for its offline `cloud-init schema` check of the user data
# CloudPilot renders (tests/integration/test_cloud_init_schema.py). Idempotent: does
# nothing when a cloud-init with the schema command is already there.
#
# Only the command-line tool is wanted. The package also enables cloud-init's boot-time
# services; where this script installs it, it disables them
# (/etc/cloud/cloud-init.disabled) so a CI machine that reboots is not reconfigured.
set -eu

if command -v cloud-init >/dev/null 2>&1 && cloud-init schema --help >/dev/null 2>&1; then
    echo "cloud-init $(cloud-init --version 2>&1 | awk '{print $NF}') is already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-cloud-init: needs apt-get (Debian or Ubuntu); install cloud-init >= 22.4 by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cloud-init
$sudo mkdir -p /etc/cloud
$sudo touch /etc/cloud/cloud-init.disabled
cloud-init schema --help >/dev/null
echo "cloud-init $(cloud-init --version 2>&1 | awk '{print $NF}') installed (boot services disabled)"

#!/usr/bin/env bash
# Create the OpenStack test peer's own virtualenv: real keystone + mimic (see
# tests/support/openstack_peer.py for how it is used).
#
# Why a separate venv: keystone pins dozens of oslo.* / SQLAlchemy / eventlet libraries and
# mimic (2016) needs Twisted + klein; installed next to CloudPilot they would move its
# dependencies around. CloudPilot only starts this venv's python on two small scripts.
#
# Idempotent: a stamp file in the venv records a hash of this script's pins; when it
# matches and the venv still imports keystone and mimic, nothing is done. Otherwise the
# venv is (re)created from scratch. Quiet: prints one line with the time it took.
#
# Environment:
#   CLOUDPILOT_OPENSTACK_VENV  where the venv goes (default: <repo>/.venv-openstack)
#   CLOUDPILOT_OPENSTACK_BASE_PYTHON  interpreter for the venv (default: python3.11, else python3)
set -euo pipefail

started=$(date +%s)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CLOUDPILOT_OPENSTACK_VENV:-$repo/.venv-openstack}
base_python=${CLOUDPILOT_OPENSTACK_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}

# Every version of the working set, tried together on Python 3.11 (keystone 30.0.0 needs
# >= 3.10). mimic itself is installed without its declared dependencies: it asks for
# testtools < 1.8 (a 2015 release, used only by mimic's own test suite) and treq (unused
# by Nova). Its runtime imports are Twisted, klein, attrs, six, iso8601 and xmltodict.
# Twisted's [tls] extra (service-identity) is needed because keystone brings pyOpenSSL,
# which makes Twisted's endpoint module import service_identity.
constraints=$(cat <<'PINS'
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
Automat==25.4.16
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
constantly==23.10.4
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
hyperlink==21.0.0
idna==3.20
Incremental==24.11.0
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystone==30.0.0
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
klein==24.8.0
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
mimic==2.2.0
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.3
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.3
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
service-identity==26.1.0
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
Tubes==0.2.1
Twisted==26.10.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
xmltodict==1.0.4
yappi==1.7.6
zope.interface==8.7
PINS
)
stamp_value=$(printf '%s\n%s\n' "$constraints" "$("$base_python" -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)
stamp="$venv/.cloudpilot-openstack-peer"
probe='import keystone, mimic, klein, twisted, werkzeug'

if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_value" ]] \
        && "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "openstack peer: already installed in $venv ($(($(date +%s) - started)) s)"
    exit 0
fi

if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" ]] && [[ -n "$(ls -A "$venv")" ]]; then
    echo "openstack peer: $venv exists and is not a virtualenv; refusing to overwrite it" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$constraints" > "$work/constraints.txt"

# -qq: pip's -q still prints warnings, e.g. one per package for every find-links or
# extra-index location configured on the machine that does not exist.
pip=("$venv/bin/python" -m pip -qq --disable-pip-version-check)
"$base_python" -m venv --clear "$venv"
# Keep git away from the venv wherever it is (as Python >= 3.13's venv does by itself).
printf '*\n' > "$venv/.gitignore"
"${pip[@]}" install --upgrade 'pip>=25'
"${pip[@]}" install -c "$work/constraints.txt" \
    keystone 'twisted[tls]' klein attrs six iso8601 xmltodict
"${pip[@]}" install -c "$work/constraints.txt" --no-deps mimic
"$venv/bin/python" -c "$probe"

echo "$stamp_value" > "$stamp"
echo "openstack peer: installed keystone + mimic in $venv ($(($(date +%s) - started)) s, $(du -sh "$venv" | cut -f1))"

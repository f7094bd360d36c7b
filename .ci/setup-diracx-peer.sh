#!/usr/bin/env bash
# Create the DiracX test peer's own virtualenv: a real DiracX 0.7.0 server from PyPI (see
# tests/support/diracx_peer.py for how it is started and docs/dirac.md for what it tests).
#
# Why a separate venv: DiracX pins FastAPI, SQLAlchemy 2.1, opentelemetry, boto3 and a
# hundred more; next to CloudPilot they would move its dependencies around. CloudPilot's
# operator talks to DiracX over HTTP only (aiohttp, already a dependency), and the tests only
# start this venv's python on tests/support/diracx_peer_servers/serve_diracx.py.
#
# Idempotent, like .ci/setup-openstack-peer.sh: a stamp file in the venv records a hash of
# this script's pins and the interpreter; when it matches and the venv still imports DiracX,
# nothing is done. Otherwise the venv is (re)created from scratch. Prints one line with the
# time it took.
#
# Environment:
#   CLOUDPILOT_DIRACX_VENV        where the venv goes (default: ~/.cache/cloudpilot-e2e/diracx-venv)
#   CLOUDPILOT_DIRACX_BASE_PYTHON interpreter for the venv (default: python3.11, else python3)
set -euo pipefail

started=$(date +%s)
venv=${CLOUDPILOT_DIRACX_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudpilot-e2e/diracx-venv}
base_python=${CLOUDPILOT_DIRACX_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}

# The whole working set, tried together on Python 3.11 (pip freeze of a venv made from the
# four requirements below). diracx-testing brings the sqlite-backed app factory
# (diracx.testing.routers:create_app) that DiracX's own tests serve; diracx-cli brings
# `dirac internal generate-cs/add-vo/add-user` for the local configuration repository;
# moto[server] serves the S3 sandbox store DiracX checks at start-up.
constraints=$(cat <<'PINS'
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiomysql==0.3.2
aiosignal==1.4.0
aiosqlite==0.22.1
annotated-doc==0.0.7
annotated-types==0.8.0
antlr4-python3-runtime==4.13.2
anyio==4.16.0
asgiref==3.13.0
attrs==26.1.0
aws-xray-sdk==2.15.0
azure-core==1.41.0
blinker==1.9.0
boto3==1.44.8
botocore==1.44.8
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
cfn-lint==1.58.0
charset-normalizer==3.5.3
click==8.5.1
coverage==7.17.5
croniter==7.0.0
cryptography==50.0.2
diraccfg==1.0.1
DIRACCommon==9.1.22
diracx-api==0.7.0
diracx-cli==0.7.0
diracx-client==0.7.0
diracx-core==0.7.0
diracx-db==0.7.0
diracx-logic==0.7.0
diracx-routers==0.7.0
diracx-tasks==0.7.0
diracx-testing==0.7.0
dnspython==2.9.2
docker==7.2.0
email-validator==2.4.0
Events==0.5
execnet==2.1.2
fastapi==0.141.1
Flask==3.1.3
flask-cors==6.0.5
freezegun==1.5.5
frozenlist==1.8.0
gitdb==4.0.12
GitPython==3.2.1
googleapis-common-protos==1.76.0
graphql-core==3.3.2
greenlet==3.5.6
grpcio==1.85.3
h11==0.16.0
hiredis==3.5.0
httpcore==1.0.9
httpcore2==2.16.2
httpx==0.29.0
httpx2==2.16.2
idna==3.20
iniconfig==2.3.1
isodate==0.7.2
itsdangerous==2.2.0
Jinja2==3.1.6
jmespath==1.1.0
joserfc==1.8.0
jsonpatch==1.48
jsonpath-ng==1.16.0
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-path==0.5.0
jsonschema-specifications==2025.9.1
lazy-object-proxy==1.13.0
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
moto==5.2.5
mpmath==1.3.0
msgpack==1.2.4
multidict==7.2.1
networkx==3.6.1
openapi-schema-validator==0.9.0
openapi-spec-validator==0.9.0
opensearch-protobufs==1.2.0
opensearch-py==3.2.0
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-instrumentation==0.66b2
opentelemetry-instrumentation-asgi==0.66b2
opentelemetry-instrumentation-fastapi==0.66b2
opentelemetry-instrumentation-logging==0.66b2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
opentelemetry-util-http==0.66b2
orjson==3.13.0
packaging==26.4
pathable==0.6.0
pluggy==1.7.0
propcache==0.5.4
protobuf==7.36.2
py-partiql-parser==0.6.3
pycparser==3.12
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
PyMySQL==1.2.0
pyparsing==3.3.3
pytest==9.2.0
pytest-asyncio==1.5.0
pytest-cov==7.1.0
pytest-github-actions-annotate-failures==0.4.2
pytest-xdist==3.8.0
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-multipart==0.0.34
PyYAML==6.0.4
redis==8.1.0
referencing==0.37.0
regex==2026.11.19
requests==2.34.2
responses==0.26.3
rfc3339-validator==0.1.4
rich==15.0.0
rpds-py==2026.9.1
s3transfer==0.19.3
sh==2.4.0
shellingham==1.5.4
signurlarity==0.3.1
six==1.17.0
smmap==5.0.3
SQLAlchemy==2.1.9
starlette==1.10.0
sympy==1.14.0
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uuid_utils==1.2.0
uvicorn==0.55.0
Werkzeug==3.1.9
wrapt==2.5.2
xmltodict==1.0.4
yarl==1.25.1
zstandard==0.25.0
PINS
)
requirements=(diracx-routers diracx-testing diracx-cli uvicorn aiosqlite 'moto[server]')
stamp_value=$(printf '%s\n%s\n%s\n' "$constraints" "${requirements[*]}" \
    "$("$base_python" -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)
stamp="$venv/.cloudpilot-diracx-peer"
probe='import diracx.routers, diracx.testing.routers, diracx.logic.auth.token, uvicorn, aiosqlite, moto.server'

if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_value" ]] \
        && "$venv/bin/python" -c "$probe" 2>/dev/null && [[ -x "$venv/bin/dirac" ]]; then
    echo "diracx peer: already installed in $venv ($(($(date +%s) - started)) s)"
    exit 0
fi

if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" ]] && [[ -n "$(ls -A "$venv")" ]]; then
    echo "diracx peer: $venv exists and is not a virtualenv; refusing to overwrite it" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$constraints" > "$work/constraints.txt"

pip=("$venv/bin/python" -m pip -qq --disable-pip-version-check)
mkdir -p "$(dirname "$venv")"
"$base_python" -m venv --clear "$venv"
printf '*\n' > "$venv/.gitignore"
"${pip[@]}" install --upgrade 'pip>=25'
"${pip[@]}" install -c "$work/constraints.txt" "${requirements[@]}"
"$venv/bin/python" -c "$probe"

echo "$stamp_value" > "$stamp"
echo "diracx peer: installed DiracX 0.7.0 in $venv ($(($(date +%s) - started)) s, $(du -sh "$venv" | cut -f1))"

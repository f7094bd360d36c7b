# syntax=docker/dockerfile:1
#
# The CloudPilot operator image: `cloudpilot operator` as a non-root user, nothing else.
#
#   docker build -t registry.example.org/grid/cloudpilot-operator:0.1.0 .
#   docker push registry.example.org/grid/cloudpilot-operator:0.1.0
#
# (podman and buildah take the same arguments.) docs/deployment.md, "The image", explains the
# choices: a pinned base, a build stage that makes a wheel of this repository and installs it
# with its dependencies into a virtual environment from wheels only (no compiler needed in
# either stage), and a final stage that copies just that environment.

# The base image, pinned by version. Pin it by digest too for reproducible builds:
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: a wheel of the repository, installed into /opt/cloudpilot ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The package, its templates and CRDs (package data), and the pinned constraints if present.
COPY pyproject.toml setup.py README.md constraints.txt* ./
COPY operator/ operator/
COPY templates/ templates/
COPY crds/ crds/
RUN python -m venv /opt/cloudpilot \
 && /opt/cloudpilot/bin/pip install --upgrade 'pip>=24' \
 && /opt/cloudpilot/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && constraints="" && if [ -f constraints.txt ]; then constraints="-c constraints.txt"; fi \
 && /opt/cloudpilot/bin/pip install --only-binary=:all: $constraints /wheels/cloudpilot-*.whl \
 && /opt/cloudpilot/bin/python -m compileall -q /opt/cloudpilot/lib \
 && /opt/cloudpilot/bin/cloudpilot operator --help > /dev/null

# ---- final: the environment only, run by an unprivileged numeric user -------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cloudpilot-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs DIRAC pilot jobs as cloud VMs" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user (Kubernetes' runAsNonRoot can only verify a numeric USER); its home is /tmp,
# the one writable place when the root filesystem is read-only (the chart mounts an emptyDir).
RUN groupadd --system --gid 10001 cloudpilot \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
            --shell /usr/sbin/nologin cloudpilot
COPY --from=build /opt/cloudpilot /opt/cloudpilot
ENV PATH=/opt/cloudpilot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# 8080: /healthz (kopf's liveness endpoint; a standby's own); 9090: /metrics (Prometheus).
EXPOSE 8080 9090
ENTRYPOINT ["cloudpilot", "operator"]
CMD ["--all-namespaces", "--health-port=8080"]

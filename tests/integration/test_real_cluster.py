"""Checks only a real API server can make, run when ``CLOUDPILOT_TEST_KUBECONFIG`` names a
cluster (kind, k3d, a test namespace of a real one), skipped otherwise.

The emulator validates nothing, so the CRD's structural schema and CEL rules are unit
tested with jsonschema and cel-python (tests/unit/test_crd_schema.py). Here the real API
server judges the same cases, through server-side dry-run: nothing is stored. The
end-to-end tests in this folder (test_pool_lifecycle.py and others) also run against the
cluster when the variable is set, with the operator in the test process.

A separate variable rather than ``KUBECONFIG``: a developer's KUBECONFIG may point at a
production cluster, and these tests install a CRD and create namespaces.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudpilot import constants

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "unit" / "crd_cases"
KUBECONFIG = os.environ.get("CLOUDPILOT_TEST_KUBECONFIG")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not KUBECONFIG, reason="CLOUDPILOT_TEST_KUBECONFIG names no cluster"),
]


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=KUBECONFIG)
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    crd = yaml.safe_load((REPO / "crds" / "cloudpilotpools.cloudpilot.io.yaml").read_text())
    try:
        extensions.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
    core = kubernetes.client.CoreV1Api(client)
    namespace = f"cloudpilot-crd-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        yield kubernetes.client.CustomObjectsApi(client), namespace
    finally:
        core.delete_namespace(namespace)


def _pool(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
        "kind": constants.KIND,
        "metadata": {"name": f"case-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def _dry_run(api: Any, spec: dict[str, Any]) -> None:
    custom, namespace = api
    custom.create_namespaced_custom_object(
        constants.API_GROUP,
        constants.API_VERSION,
        namespace,
        constants.PLURAL,
        _pool(spec),
        dry_run="All",
    )


INVALID = yaml.safe_load((CASES / "invalid.yaml").read_text())
VALID = sorted((CASES / "valid").glob("*.yaml"))


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_the_api_server_refuses_each_invalid_case(api: Any, case: dict[str, Any]) -> None:
    import kubernetes

    with pytest.raises(kubernetes.client.ApiException) as refused:
        _dry_run(api, case["spec"])
    assert refused.value.status == 422


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_the_api_server_accepts_each_valid_case(api: Any, path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    _dry_run(api, document.get("spec", document))

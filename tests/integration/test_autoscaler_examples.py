"""HPA and KEDA can drive a pool: the scale subresource reports a selector, and the examples
in examples/autoscaling/ are accepted by a real kube-apiserver.

The HPA is a built-in kind: the API server validates it fully (strict field validation, as
kubectl sends). KEDA is not installed here and its CRD is not on PyPI or npm in a form this
suite can fetch, so a minimal ScaledObject CRD is installed by this test: the fields the
example uses, with KEDA's names and types (keda.sh/v1alpha1, as documented by KEDA 2.x) and
no room for unknown fields, so a misspelt field in the example is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from cloudpilot import constants
from tests.support import official_client as kube_client
from tests.support.kube import wait_for
from tests.support.stack import Stack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "autoscaling"

_STR = {"type": "string"}
_INT = {"type": "integer", "format": "int32"}
SCALED_OBJECT_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "scope": "Namespaced",
        "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject"},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["scaleTargetRef", "triggers"],
                                "properties": {
                                    "scaleTargetRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {
                                            "apiVersion": _STR,
                                            "kind": _STR,
                                            "name": _STR,
                                            "envSourceContainerName": _STR,
                                        },
                                    },
                                    "minReplicaCount": _INT,
                                    "maxReplicaCount": _INT,
                                    "idleReplicaCount": _INT,
                                    "pollingInterval": _INT,
                                    "cooldownPeriod": _INT,
                                    "triggers": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["type", "metadata"],
                                            "properties": {
                                                "type": _STR,
                                                "name": _STR,
                                                "metricType": _STR,
                                                "metadata": {
                                                    "type": "object",
                                                    "additionalProperties": _STR,
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def keda_crd(stack: Stack) -> Iterator[None]:
    extensions = kubernetes.client.ApiextensionsV1Api(kube_client.api_client())
    extensions.create_custom_resource_definition(SCALED_OBJECT_CRD)
    try:
        wait_for(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in (
                    extensions.read_custom_resource_definition("scaledobjects.keda.sh").status
                ).conditions
                or []
            ),
            30,
            message="the ScaledObject CRD is established",
        )
        yield
    finally:
        extensions.delete_custom_resource_definition("scaledobjects.keda.sh")


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def test_the_scale_subresource_reports_the_pools_selector(stack: Stack) -> None:
    stack.apply_pool("scaled", replicas=1)
    stack.wait_status("scaled", lambda s: s.get("selector"), what="status.selector")
    scale = stack.custom.get_namespaced_custom_object_scale(
        constants.API_GROUP, constants.API_VERSION, stack.namespace, constants.PLURAL, "scaled"
    )
    assert scale["status"]["selector"] == "cloudpilot.io/pool=scaled"
    assert scale["spec"]["replicas"] == 1


def test_the_hpa_example_is_accepted_and_targets_a_pool(stack: Stack) -> None:
    hpa = _example("hpa-external-metric.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == (
        f"{constants.API_GROUP}/{constants.API_VERSION}",
        constants.KIND,
    )

    def create(body: dict[str, Any]) -> Any:
        # Through the generic client: the typed one refuses unknown fields itself, and the
        # point is what the API server accepts.
        return stack.custom.create_namespaced_custom_object(
            "autoscaling",
            "v2",
            stack.namespace,
            "horizontalpodautoscalers",
            body,
            field_validation="Strict",
        )

    created = create(hpa)
    assert created["spec"]["metrics"][0]["type"] == "External"
    broken = _example("hpa-external-metric.yaml")
    broken["metadata"]["name"] = "broken"
    broken["spec"]["maxReplica"] = 3  # the check can fail: a misspelt field is refused
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(broken)
    assert refused.value.status in (400, 422)


def test_the_keda_example_is_accepted_by_a_scaled_object_schema(
    stack: Stack, keda_crd: None
) -> None:
    scaled = _example("keda-scaledobject.yaml")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == constants.KIND

    def create(body: dict[str, Any]) -> Any:
        return stack.custom.create_namespaced_custom_object(
            "keda.sh", "v1alpha1", stack.namespace, "scaledobjects", body, field_validation="Strict"
        )

    created = create(scaled)
    assert created["spec"]["maxReplicaCount"] == 200
    broken = _example("keda-scaledobject.yaml")
    broken["metadata"]["name"] = "broken"
    broken["spec"]["maxReplicas"] = 3
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(broken)
    assert refused.value.status in (400, 422)

"""HPA and KEDA can drive a pool: the scale subresource reports a selector, and the examples
in examples/autoscaling/ are accepted by a real kube-apiserver.

The HPA is a built-in kind: the API server validates it fully (strict field validation, as
kubectl sends). KEDA is not installed here; its published ScaledObject CRD (KEDA v2.16.1,
vendored unchanged in tests/support/third_party/keda/) is, so the example is checked
against KEDA's own structural schema and a misspelt field is refused. KEDA's admission
webhook is not run (it needs the KEDA operator).
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

KEDA_CRD = Path(__file__).resolve().parents[1] / "support" / "third_party" / "keda"
SCALED_OBJECT_CRD: dict[str, Any] = yaml.safe_load(
    (KEDA_CRD / "keda.sh_scaledobjects.yaml").read_text()
)


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


def test_the_keda_example_is_accepted_by_kedas_published_schema(
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

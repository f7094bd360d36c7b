"""Which EC2 calls the gateway sends when a batched ``TerminateInstances`` is refused.

One bad id (unknown or malformed) fails EC2's whole call, so the gateway retries such a
batch one VM at a time and the others still go. Any other refusal (throttling, a server
error, rejected credentials) would refuse every one of those calls too: it must cost no
further call and be reported for each VM of the batch, so the reconciler backs off and
tries again next cycle. Real peers: moto's EC2 server behind the counting, fault-injecting
LatencyProxy. Counts only, never times.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudpilot import naming
from cloudpilot.cloud import gateway as gateway_module
from cloudpilot.cloud.gateway import CloudGateway, CreateRequest, Credentials, ListedNode
from cloudpilot.cloud.ratelimit import TokenBucket
from cloudpilot.memory import ErrorKind
from cloudpilot.models.queues import QueueConfig, effective_queues
from cloudpilot.models.spec import parse_spec
from cloudpilot_devtools import moto_ec2
from cloudpilot_devtools.ec2_emulator import EC2Emulator
from cloudpilot_devtools.latency_proxy import LatencyProxy

pytestmark = pytest.mark.slow

NAMESPACE = "pilots"
POOL = "terminate"
AMI_ID = "ami-0a1e9c0a1a9e94001"  # in the emulator's catalogue: no DescribeImages needed


@pytest.fixture
def proxy(ec2: EC2Emulator) -> Iterator[LatencyProxy]:
    """A counting proxy in front of the suite's moto (reset for this test)."""
    with LatencyProxy(ec2.endpoint) as started:
        yield started


def _queue(ec2: EC2Emulator, proxy: LatencyProxy) -> QueueConfig:
    spec = parse_spec(
        {
            "replicas": 1,
            "ce": "ce.cloudpilot.test",
            "cloudType": moto_ec2.CLASS_PATH,
            "driver": ec2.driver_options(proxy.endpoint),
            "credentialsSecret": {"name": "ec2-credentials"},
            "instance": {"image": AMI_ID, "flavor": "t3.small"},
            "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
        }
    )
    (queue,) = effective_queues(spec, namespace=NAMESPACE, pool_name=POOL)
    return queue


async def _gateway_with_vms(
    ec2: EC2Emulator, proxy: LatencyProxy, count: int
) -> tuple[CloudGateway, list[ListedNode]]:
    """A gateway through the proxy and ``count`` running VMs (counts reset afterwards)."""
    queue = _queue(ec2, proxy)
    gateway = CloudGateway(
        queue.account,
        Credentials(*ec2.credentials),
        limiter=TokenBucket(1000.0, 1000),
        allowed_driver_classes=frozenset({moto_ec2.CLASS_PATH}),
    )
    result = await gateway.create(
        CreateRequest(
            queue=queue,
            count=count,
            name=naming.new_vm_name(naming.queue_prefix(NAMESPACE, POOL, queue.name)),
            user_data=b"#cloud-config\n",
            tags=naming.vm_tags(NAMESPACE, POOL, queue.name, queue.ce),
        )
    )
    assert result.error is None and len(result.created) == count
    listed = await gateway.list_nodes()
    assert len(listed) == count
    proxy.reset_counts()
    return gateway, listed


def _terminates(proxy: LatencyProxy) -> int:
    return proxy.counts.get("TerminateInstances", 0)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("RequestLimitExceeded", ErrorKind.TRANSIENT),
        ("InternalError", ErrorKind.TRANSIENT),
        ("AuthFailure", ErrorKind.BAD_CREDENTIALS),
    ],
)
async def test_a_batch_refused_for_every_vm_is_not_retried_vm_by_vm(
    ec2: EC2Emulator, proxy: LatencyProxy, code: str, kind: ErrorKind
) -> None:
    gateway, listed = await _gateway_with_vms(ec2, proxy, 4)
    proxy.fail_next("TerminateInstances", code)
    outcome = await gateway.destroy(listed)
    assert _terminates(proxy) == 1, "the refused batch was followed by per-VM calls"
    assert set(outcome) == {n.id for n in listed}
    for error in outcome.values():
        assert error is not None
        assert (error.kind, error.operation) == (kind, "destroy")
        assert code in error.message
    # Nothing was terminated: the VMs are still there for the next cycle to destroy.
    assert {n.id for n in await gateway.list_nodes()} == {n.id for n in listed}
    assert await gateway.destroy(listed) == dict.fromkeys(n.id for n in listed)
    assert _terminates(proxy) == 2


@pytest.mark.parametrize("code", ["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"])
async def test_a_batch_poisoned_by_one_bad_id_is_retried_vm_by_vm(
    ec2: EC2Emulator, proxy: LatencyProxy, code: str
) -> None:
    gateway, listed = await _gateway_with_vms(ec2, proxy, 3)
    proxy.fail_next("TerminateInstances", code, status=400)
    outcome = await gateway.destroy(listed)
    assert _terminates(proxy) == 1 + len(listed)
    assert outcome == dict.fromkeys(n.id for n in listed)
    assert await gateway.list_nodes() == []


async def test_a_throttled_chunk_fails_only_its_own_vms(
    ec2: EC2Emulator, proxy: LatencyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are independent: the throttled one is reported, the next one still goes."""
    monkeypatch.setattr(gateway_module, "EC2_TERMINATE_CHUNK", 2)
    gateway, listed = await _gateway_with_vms(ec2, proxy, 5)
    proxy.fail_next("TerminateInstances", "RequestLimitExceeded")
    outcome = await gateway.destroy(listed)
    assert _terminates(proxy) == 3  # one per chunk of 2, 2 and 1; no per-VM retries
    throttled, destroyed = listed[:2], listed[2:]
    assert all(outcome[n.id] is None for n in destroyed)
    for n in throttled:
        error = outcome[n.id]
        assert error is not None and error.kind is ErrorKind.TRANSIENT
    assert {n.id for n in await gateway.list_nodes()} == {n.id for n in throttled}

"""The per-provider batch size of a create (cloudpilot.cloud.batch_size)."""

from __future__ import annotations

import pytest

from cloudpilot import constants
from cloudpilot.cloud.batch_size import CreateApi, max_batch
from cloudpilot.cloud.batching import batch_sizes as split


def batch_sizes(count: int, api: CreateApi, site_cap: int | None = None) -> list[int]:
    return split(count, max_batch(api, site_cap))


def test_ec2_sends_a_default_cycle_in_one_call() -> None:
    """The default maxCreatesPerCycle of one queue is one RunInstances, not five of 100."""
    cycle = constants.DEFAULT_MAX_CREATES_PER_CYCLE
    assert batch_sizes(cycle, CreateApi.EC2_RUN_INSTANCES, constants.DEFAULT_BATCH_SIZE) == [cycle]


def test_ec2_maximum_is_1000_a_call() -> None:
    assert batch_sizes(2500, CreateApi.EC2_RUN_INSTANCES) == [1000, 1000, 500]
    assert max_batch(CreateApi.EC2_RUN_INSTANCES) == 1000


def test_the_site_cap_lowers_but_never_raises_the_provider_maximum() -> None:
    assert batch_sizes(250, CreateApi.EC2_RUN_INSTANCES, site_cap=100) == [100, 100, 50]
    assert max_batch(CreateApi.EC2_RUN_INSTANCES, site_cap=5000) == 1000
    assert max_batch(CreateApi.ONE_PER_CALL, site_cap=1000) == 1


@pytest.mark.parametrize("count", [0, -1])
def test_nothing_to_create_is_no_call(count: int) -> None:
    assert batch_sizes(count, CreateApi.EC2_RUN_INSTANCES) == []


def test_providers_without_a_batch_api_get_one_vm_per_call() -> None:
    assert batch_sizes(3, CreateApi.ONE_PER_CALL) == [1, 1, 1]


def test_a_nonsense_cap_still_makes_progress() -> None:
    assert batch_sizes(2, CreateApi.EC2_RUN_INSTANCES, site_cap=0) == [1, 1]

"""How many VMs one create call may ask for, per provider: a pure rule (the split itself
is :func:`cloudpilot.cloud.batching.batch_sizes`).

A round trip is the price of a create call, so fewer calls means a faster scale-up. Only
providers whose create API starts many VMs at once get batches at all:

* **EC2** (``RunInstances`` with ``MinCount = MaxCount``): AWS documents no per-call upper
  bound on ``MaxCount`` other than the account's quota and the zone's capacity. CloudPilot
  takes **1,000**: the same bound as EC2's other per-call maximums that it already uses
  (``DescribeInstances`` pages, ``TerminateInstances`` ids), an answer that stays a few
  megabytes of XML, and above the default ``maxCreatesPerCycle`` (500), so a cycle's
  scale-up of one queue is one call and one round trip. The cost, accepted: a batch is
  all-or-nothing, so a quota that allows 300 of 500 refuses the whole batch (with a clear
  ``InstanceLimitExceeded``) where five batches of 100 would have started 300. The queue
  backs off and the condition says why; a site that often runs at its quota can lower
  ``operator.batchSize``.
* **everything else** (OpenStack included): libcloud's ``create_node`` starts one VM per call
  (its OpenStack driver sends no ``min_count``/``max_count``), so the batch is 1 and the
  calls run concurrently (``operator.parallelism``).

The site's ``operator.batchSize`` caps the provider's maximum; it never raises it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class CreateApi(StrEnum):
    """How a provider's create call is shaped, as far as batching goes."""

    EC2_RUN_INSTANCES = "ec2"
    ONE_PER_CALL = "one-per-call"


PROVIDER_MAX_BATCH: Final = {CreateApi.EC2_RUN_INSTANCES: 1000, CreateApi.ONE_PER_CALL: 1}
"""Most VMs one create call of each kind asks for (see the module docstring for why)."""


def max_batch(api: CreateApi, site_cap: int | None = None) -> int:
    """The largest batch for ``api``, under the site's cap if it set one (at least 1)."""
    limit = PROVIDER_MAX_BATCH[api]
    if site_cap is not None:
        limit = min(limit, site_cap)
    return max(limit, 1)

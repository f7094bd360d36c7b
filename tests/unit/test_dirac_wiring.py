"""The reconciler's DiracX hooks: what it hands cloudpilot.dirac.link from an observation."""

from __future__ import annotations

from cloudpilot.decision import AccountListing, Observation
from cloudpilot.reconciler import _unlisted_queues
from tests.support.builders import account, cloud_error, queue


def test_queues_of_an_account_that_failed_to_list_are_unlisted() -> None:
    ok, down = account(), account(credentials_secret="other-creds")
    observation = Observation(
        generation=1,
        previous={},
        queues=(queue("a", 1), queue("b", 1, account=down), queue("c", 1, account=down)),
        accounts=(AccountListing(ok), AccountListing(down, error=cloud_error())),
    )
    assert _unlisted_queues(observation) == {"b", "c"}
    listed = Observation(generation=1, previous={}, queues=observation.queues)
    assert _unlisted_queues(listed) == frozenset()

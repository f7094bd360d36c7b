"""The reconciler's DiracX hooks: what it hands cloudpilot.dirac.link from an observation."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudpilot.decision import AccountListing, Observation
from cloudpilot.models.spec import parse_spec
from cloudpilot.reconciler import PoolRef, Reconciler, _unlisted_queues
from tests.support.builders import account, cloud_error, pool_spec, queue


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


async def test_an_empty_token_is_said_in_status_not_silently_skipped() -> None:
    reconciler = Reconciler()
    pool = PoolRef("ns", "p", "uid-1")
    dirac = {
        "endpoint": "https://d.test",
        "credentialsSecret": {"name": "dx"},
        "vo": "v",
        "site": "S",
    }
    spec = parse_spec(pool_spec(dirac=dirac))
    assert spec.dirac is not None

    async def secret(name: str) -> dict[str, bytes]:
        return {"token": b" \n"}

    assert await reconciler._dirac_token(pool, spec, secret) is None
    await reconciler.dirac.sync(pool.uid, spec.dirac, None, [], ce="ce", now=datetime.now(UTC))
    assert "key token is empty" in reconciler.dirac.status(pool.uid, spec.dirac)["lastError"]

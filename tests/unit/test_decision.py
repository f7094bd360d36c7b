"""Each rule of one pool cycle, as decide() and conclude() apply it: no cloud, no cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cloudpilot import decision, planner
from cloudpilot.cloud.gateway import CreateResult, ListedNode
from cloudpilot.decision import AccountListing, Observation, Results, Tuning
from cloudpilot.memory import CloudError, ErrorKind, PoolMemory
from cloudpilot.models.queues import ClosedLoopConfig
from cloudpilot.models.spec import parse_spec
from cloudpilot.models.vms import Phase
from cloudpilot.pilot_proxy import ProxyReport
from tests.support.builders import NOW, account, backoff, pool_spec, queue, vm

TUNING = Tuning(interval=60.0, converging_interval=10.0)
ACCOUNT = account()


def observe(replicas: int = 2, **overrides: Any) -> Observation:
    fields: dict[str, Any] = {
        "generation": 1,
        "previous": {},
        "spec": parse_spec(pool_spec(replicas=replicas)),
        "queues": (queue("default", replicas),),
        "accounts": (AccountListing(ACCOUNT, fingerprint="fp-1"),),
    }
    fields.update(overrides)
    return Observation(**fields)


def cycle(
    obs: Observation, memory: PoolMemory | None = None, results: Results | None = None
) -> tuple[decision.Decision, decision.Outcome]:
    chosen = decision.decide(obs, memory or PoolMemory(generation=1), NOW, TUNING)
    return chosen, decision.conclude(obs, chosen, results or Results(), NOW, TUNING)


def conditions(outcome: decision.Outcome) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in outcome.status_patch.get("conditions", [])}


def node(n: int) -> ListedNode:
    return ListedNode(id=f"i-{n}", name=f"vm-{n}", state="pending", created_at=NOW)


# -- what the cycle does ------------------------------------------------------------------


def test_a_new_pool_creates_its_vms_after_recording_its_spec() -> None:
    chosen, _ = cycle(observe(2))
    assert chosen.act and chosen.record_spec
    assert chosen.plan.creations == (planner.Creation("default", 2),)
    assert [e.reason for e in chosen.audit] == ["ScaleUpPlanned"]


def test_the_plan_is_made_once_per_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = planner.plan
    monkeypatch.setattr(planner, "plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    created = CreateResult("default", 2, (node(1), node(2)))
    cycle(observe(2), results=Results(created=(created,)))
    assert len(calls) == 1


def test_rotated_credentials_clear_the_back_off_but_not_the_hold_after_an_uncertain_create() -> (
    None
):
    uncertain = backoff(ErrorKind.TRANSIENT, retry_in=30)
    uncertain = replace(uncertain, error=replace(uncertain.error, uncertain=True))
    memory = PoolMemory(
        generation=1,
        backoff={"default": backoff(ErrorKind.BAD_CREDENTIALS, retry_in=3600), "q2": uncertain},
        fingerprints={ACCOUNT: "fp-old"},
    )
    chosen = decision.decide(observe(2), memory, NOW, TUNING)
    assert set(chosen.memory.backoff) == {"q2"}
    assert chosen.plan.creations == (planner.Creation("default", 2),)
    assert chosen.memory.fingerprints == {ACCOUNT: "fp-1"}


def test_the_same_credentials_keep_the_back_off() -> None:
    memory = PoolMemory(
        generation=1,
        backoff={"default": backoff(ErrorKind.BAD_CREDENTIALS, retry_in=3600)},
        fingerprints={ACCOUNT: "fp-1"},
    )
    chosen = decision.decide(observe(2), memory, NOW, TUNING)
    assert "default" in chosen.memory.backoff and chosen.plan.creations == ()


def test_first_credentials_seen_are_no_rotation() -> None:
    memory = PoolMemory(
        generation=1, backoff={"default": backoff(ErrorKind.BAD_CREDENTIALS, retry_in=3600)}
    )
    assert "default" in decision.decide(observe(2), memory, NOW, TUNING).memory.backoff


def test_one_account_that_cannot_be_listed_blocks_the_whole_pool() -> None:
    other = account(credentials_secret="other")
    refused = CloudError(ErrorKind.BAD_CREDENTIALS, "AuthFailure", "list")
    obs = observe(
        2,
        queues=(queue("default", 2), queue("q2", 2, account=other)),
        accounts=(AccountListing(ACCOUNT), AccountListing(other, refused)),
    )
    chosen, outcome = cycle(obs)
    assert not chosen.act and chosen.plan == planner.Plan()
    assert chosen.blocking == refused and chosen.memory.outage is not None
    assert conditions(outcome)["Stalled"]["reason"] == "BadCredentials"


def test_a_listing_error_wins_over_an_expired_proxy() -> None:
    refused = CloudError(ErrorKind.TRANSIENT, "throttled", "list")
    stop = _expired_proxy()
    chosen, _ = cycle(observe(2, accounts=(AccountListing(ACCOUNT, refused),), proxy=stop))
    assert chosen.blocking == refused


def test_an_expired_proxy_stops_creations_blocks_and_still_deletes() -> None:
    done = vm("default", Phase.DONE)
    chosen, outcome = cycle(observe(2, proxy=_expired_proxy(), observed=(done,)))
    assert chosen.blocking is not None and chosen.blocking.kind is ErrorKind.PROXY_EXPIRED
    assert chosen.plan.creations == () and [d.vm for d in chosen.plan.deletions] == [done]
    assert chosen.act
    assert conditions(outcome)["Stalled"]["reason"] == "ProxyExpired"


def test_a_replica_that_does_not_lead_acts_on_nothing_and_still_shows_what_is_missing() -> None:
    chosen, outcome = cycle(observe(2, leading=False))
    assert not chosen.act and not chosen.record_spec and chosen.audit == ()
    assert conditions(outcome)["Reconciling"]["reason"] == "ScalingUp"
    assert outcome.next_delay == TUNING.converging_interval


def test_a_spec_that_cannot_be_recorded_creates_nothing_and_says_why() -> None:
    _, outcome = cycle(observe(2), results=Results(record_error="RuntimeError: unknown field"))
    error = outcome.status_patch["lastError"]
    assert error["reason"] == "Transient" and "teardownSpec" in error["message"]
    assert outcome.next_delay <= 3.0


# -- what the status says after acting ----------------------------------------------------


def test_created_vms_count_as_starting_and_the_pool_is_ready() -> None:
    created = CreateResult("default", 2, (node(1), node(2)))
    _, outcome = cycle(observe(2), results=Results(created=(created,)))
    assert outcome.status_patch["starting"] == 2
    assert conditions(outcome)["Ready"]["status"] == "True"
    assert set(outcome.memory.pending) == {"i-1", "i-2"}
    assert [e.reason for e in outcome.events] == ["Created", "Created"]


def test_a_failed_create_has_one_reason_in_event_condition_and_last_error() -> None:
    quota = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")
    created = CreateResult("default", 2, (node(1),), quota)
    # The open loop: a quota refusal is a fault, backed off from (the closed loop learns it).
    open_loop = queue("default", 2, closed_loop=ClosedLoopConfig(enabled=False))
    _, outcome = cycle(observe(2, queues=(open_loop,)), results=Results(created=(created,)))
    warning = [e for e in outcome.events if e.type == "Warning"]
    assert [e.reason for e in warning] == ["QuotaExceeded"]
    assert "create in queue default failed: created 1 of 2" in warning[0].message
    assert conditions(outcome)["Stalled"]["reason"] == "QuotaExceeded"
    assert outcome.status_patch["lastError"]["reason"] == "QuotaExceeded"
    (summary,) = outcome.status_patch["queues"]
    assert summary["held"] == "BackOff" and summary["starting"] == 1


def test_with_the_closed_loop_a_quota_refusal_is_posted_but_not_backed_off_from() -> None:
    """The closed loop learned the account's headroom from the refusal and plans within it:
    no back-off, no Stalled; the refusal is still one Warning with its error class."""
    quota = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")
    created = CreateResult("default", 2, (node(1),), quota)
    _, outcome = cycle(observe(2), results=Results(created=(created,)))
    assert [e.reason for e in outcome.events if e.type == "Warning"] == ["QuotaExceeded"]
    assert "Stalled" not in conditions(outcome)
    assert outcome.memory.backoff == {}
    (summary,) = outcome.status_patch["queues"]
    assert summary["starting"] == 1


def test_a_failed_deletion_is_a_warning_with_the_error_class() -> None:
    done = vm("default", Phase.DONE)
    refused = CloudError(ErrorKind.TRANSIENT, "throttled", "destroy")
    _, outcome = cycle(observe(0, observed=(done,)), results=Results(deleted={done.id: refused}))
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "Transient")]
    assert done.id not in outcome.memory.deleting


def test_a_removed_queues_vm_is_destroyed_through_the_account_that_listed_it() -> None:
    gone = vm("removed", Phase.DONE)
    obs = observe(0, accounts=(AccountListing(ACCOUNT, listed_ids=frozenset({gone.id})),))
    chosen = decision.decide(replace(obs, observed=(gone,)), PoolMemory(), NOW, TUNING)
    assert [d.vm for d in chosen.by_account[ACCOUNT]] == [gone]


# -- events: once per problem ---------------------------------------------------------------


def test_a_blocking_error_is_posted_once_not_every_cycle() -> None:
    refused = CloudError(ErrorKind.BAD_CREDENTIALS, "AuthFailure", "list")
    obs = observe(2, accounts=(AccountListing(ACCOUNT, refused),))
    _, first = cycle(obs)
    assert [e.reason for e in first.events] == ["BadCredentials"]
    _, again = cycle(replace(obs, previous={"lastError": first.status_patch["lastError"]}))
    assert again.events == []


def test_an_invalid_spec_keeps_the_last_observation_and_warns_once_with_the_condition_reason() -> (
    None
):
    problem = CloudError(ErrorKind.CONFIG, "spec.replicas: must be >= 0")
    previous = {"replicas": 3, "instances": [{"id": "i-1"}], "instanceCount": 3}
    memory = PoolMemory(generation=1, backoff={"default": backoff()})
    obs = Observation(generation=2, previous=previous, problem=problem)
    chosen, outcome = cycle(obs, memory)
    assert not chosen.act and chosen.memory is memory
    assert "replicas" not in outcome.status_patch and "instances" not in outcome.status_patch
    assert conditions(outcome)["Stalled"]["reason"] == "InvalidConfig"
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "InvalidConfig")]
    assert outcome.next_delay == TUNING.interval
    stored = {**previous, **outcome.status_patch}
    _, again = cycle(replace(obs, previous=stored), memory)
    assert again.events == [] and again.status_patch == {}


# -- when to come back ------------------------------------------------------------------------


def test_a_quiet_pool_comes_back_after_the_interval() -> None:
    _, outcome = cycle(observe(1, observed=(vm("default"),)))
    assert outcome.next_delay == TUNING.interval


def test_a_converging_pool_comes_back_sooner() -> None:
    created = CreateResult("default", 2, (node(1), node(2)))
    _, outcome = cycle(observe(2), results=Results(created=(created,)))
    assert outcome.next_delay == TUNING.converging_interval


def test_an_unreachable_endpoint_is_retried_with_back_off_capped_by_the_interval() -> None:
    down = CloudError(ErrorKind.UNREACHABLE, "connection refused", "list")
    obs = observe(2, accounts=(AccountListing(ACCOUNT, down),), jitter=0.0)
    _, outcome = cycle(obs)
    assert outcome.next_delay == 5.0  # the first back-off step (10 s) at the lowest jitter
    memory = PoolMemory(generation=1)
    for _ in range(10):
        chosen = decision.decide(obs, memory, NOW, TUNING)
        memory = decision.conclude(obs, chosen, Results(), NOW, TUNING).memory
    assert decision.conclude(obs, chosen, Results(), NOW, TUNING).next_delay == TUNING.interval


def test_queues_backing_off_are_not_prepared() -> None:
    queues = [queue("a", 1), queue("b", 1), queue("c", 0)]
    assert decision.queues_to_prepare(queues, PoolMemory(backoff={"b": backoff()})) == {"a"}


def test_a_queue_with_a_proxy_speaks_for_its_account() -> None:
    a, b = queue("a", 1), queue("b", 1)
    assert decision.speakers([a, b], {"b"}) == {ACCOUNT: b}
    assert decision.speakers([a, b], ()) == {ACCOUNT: a}


def _expired_proxy() -> ProxyReport:
    from cloudpilot.credentials.proxy import ProxyReason, ProxyVerdict
    from cloudpilot.status import Condition

    verdict = ProxyVerdict(
        condition=Condition("ProxyExpiring", "True", "ProxyExpired", "expired"),
        reason=ProxyReason.EXPIRED,
        stop=True,
        message="the pilot proxy expired",
    )
    return ProxyReport(frozenset({"default"}), verdict, None, None, verdict)

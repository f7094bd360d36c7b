"""Each rule of one pool cycle, as decide() and conclude() apply it: no cloud, no cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cloudpilot import decision, planner
from cloudpilot.cloud.results import CreateResult, ListedNode
from cloudpilot.credentials.proxy import ProxyReport
from cloudpilot.decision import NO_PROXY, AccountListing, Observation, Results, Tuning
from cloudpilot.memory import CloudError, ErrorKind, PoolMemory
from cloudpilot.models.queues import ClosedLoopConfig
from cloudpilot.models.spec import parse_spec
from cloudpilot.models.vms import Phase
from tests.support.builders import NOW, account, backoff, pool_spec, queue, vm

TUNING = Tuning(interval=60.0, converging_interval=10.0)
ACCOUNT = account()


OPEN_LOOP = ClosedLoopConfig(enabled=False)


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


def test_an_expired_proxy_still_shows_when_the_spec_cannot_be_recorded_either() -> None:
    """Another queue still creates, so the spec is recorded, and that fails: the condition
    keeps the expired proxy, which blocks its queue whatever is recorded."""
    obs = observe(2, queues=(queue("default", 2), queue("q2", 2)), proxy=_expired_proxy())
    chosen = decision.decide(obs, PoolMemory(generation=1), NOW, TUNING)
    assert chosen.record_spec and chosen.plan.creations == (planner.Creation("q2", 2),)
    outcome = decision.conclude(
        obs, chosen, Results(record_error="RuntimeError: unknown field"), NOW, TUNING
    )
    assert outcome.status_patch["lastError"]["reason"] == "ProxyExpired"
    assert conditions(outcome)["Stalled"]["reason"] == "ProxyExpired"


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


def test_room_a_failed_create_frees_under_a_pool_limit_goes_to_other_queues_next_cycle() -> None:
    """The one-cycle lag of :func:`decision.as_it_stands`, pinned as intended.

    Two queues share a pool ``maxInstances`` of 4: each is given 2. Queue a's create
    fails, so 2 slots are free again; the status of this cycle still shows b held by
    MaxInstances (the plan is made once: b really got no more this cycle), and the next
    cycle, which comes back at the converging interval, gives b the freed room.
    """
    # Open loop: a quota refusal backs the queue off (the closed loop would learn the quota).
    obs = observe(
        spec=parse_spec(pool_spec(limits={"maxInstances": 4})),
        queues=(queue("a", 4, closed_loop=OPEN_LOOP), queue("b", 4)),
    )
    chosen = decision.decide(obs, PoolMemory(generation=1), NOW, TUNING)
    assert chosen.plan.creations == (planner.Creation("a", 2), planner.Creation("b", 2))
    quota = CloudError(ErrorKind.QUOTA, "InstanceLimitExceeded", "create")
    results = Results(
        created=(CreateResult("a", 2, (), quota), CreateResult("b", 2, (node(1), node(2))))
    )
    outcome = decision.conclude(obs, chosen, results, NOW, TUNING)
    held = {q["name"]: q.get("held") for q in outcome.status_patch["queues"]}
    assert held == {"a": "BackOff", "b": "MaxInstances"}  # the lag: b is not re-shared
    assert outcome.next_delay <= TUNING.converging_interval

    again = decision.decide(obs, outcome.memory, NOW, TUNING)
    assert again.plan.creations == (planner.Creation("b", 2),)


def test_a_create_the_leadership_fence_stopped_is_neither_a_success_nor_a_failure() -> None:
    """One VM went out before the Lease was lost, two did not: the one is pending, the two
    are still missing (for whoever leads now), and no Warning, back-off or reset follows."""
    uncertain = backoff(ErrorKind.TRANSIENT, retry_in=-1)  # over: the queue may create
    memory = PoolMemory(generation=1, backoff={"default": uncertain})
    chosen = decision.decide(observe(3), memory, NOW, TUNING)
    assert chosen.plan.creations == (planner.Creation("default", 3),)
    fenced = CreateResult("default", 3, (node(1),), fenced=True)
    results = Results(created=(fenced,))
    outcome = decision.conclude(observe(3), chosen, results, NOW, TUNING)
    assert [(e.type, e.reason) for e in outcome.events] == [("Normal", "Created")]
    assert set(outcome.memory.pending) == {"i-1"}
    assert outcome.memory.backoff == memory.backoff  # no success recorded either
    after = decision.as_it_stands(chosen.plan, results)
    assert after.creations == (planner.Creation("default", 2),)
    assert after.queues[0].held is None and after.queues[0].starting == 1


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


# -- the early scale-up (cloudpilot.early_create) -------------------------------------------


def test_creations_sent_before_the_listing_are_pending_and_count_against_the_cap() -> None:
    """3 asked early (2 started, listing not showing them yet): a pool of 5 creates none
    more, the status counts them, and they get their Created events."""
    early = CreateResult("default", 3, (node(1), node(2)), CloudError(ErrorKind.QUOTA, "q"))
    tuning = replace(TUNING, max_creates_per_cycle=4)
    # Open loop: the quota refusal backs off (the closed loop would learn the quota instead).
    obs = observe(5, early=(early,), queues=(queue("default", 5, closed_loop=OPEN_LOOP),))
    chosen = decision.decide(obs, PoolMemory(generation=1), NOW, tuning)
    assert set(chosen.memory.pending) == {"i-1", "i-2"}
    assert "default" in chosen.memory.backoff  # the early failure backs the queue off
    assert chosen.plan.creations == ()
    outcome = decision.conclude(obs, chosen, Results(), NOW, tuning)
    assert outcome.status_patch["replicas"] == 2
    assert [e.reason for e in outcome.events].count("Created") == 2


def test_the_cap_left_after_an_early_scale_up_is_what_the_cycle_may_still_create() -> None:
    early = CreateResult("default", 3, (node(1), node(2), node(3)))
    tuning = replace(TUNING, max_creates_per_cycle=4)
    chosen = decision.decide(observe(10, early=(early,)), PoolMemory(generation=1), NOW, tuning)
    assert chosen.plan.creations == (planner.Creation("default", 1),)


def test_a_last_look_is_kept_only_when_every_account_was_listed() -> None:
    listed = observe(2, observed=(vm(),))
    look = decision.last_look(listed, NOW)
    assert look is not None and look.observed == listed.observed and look.at == NOW
    failed = observe(2, accounts=(AccountListing(ACCOUNT, CloudError(ErrorKind.TRANSIENT, "x")),))
    assert decision.last_look(failed, NOW) is None
    assert decision.last_look(observe(2, accounts=()), NOW) is None


def test_the_early_scale_up_leaves_out_queues_an_expired_proxy_stops() -> None:
    queues = (queue("default", 3),)
    look = decision.last_look(observe(1, queues=queues), NOW)
    stopped = replace(NO_PROXY, stopped_queues=frozenset({"default"}))
    spec = parse_spec(pool_spec(replicas=3))
    args = (PoolMemory(), NOW, TUNING, {})  # {}: the closed loop gates nothing
    assert decision.early_scale_up(look, queues, spec, NO_PROXY, *args) == (
        planner.Creation("default", 3),
    )
    assert decision.early_scale_up(look, queues, spec, stopped, *args) == ()


def test_no_early_scale_up_without_the_closed_loops_gates() -> None:
    """A pool the loop does not know yet (gates None) or a queue it holds creates nothing
    before the listing: a hold after fizzles is not bypassed by the early path."""
    queues = (queue("default", 3),)
    look = decision.last_look(observe(1, queues=queues), NOW)
    spec = parse_spec(pool_spec(replicas=3))
    memory = PoolMemory()
    assert decision.early_scale_up(look, queues, spec, NO_PROXY, memory, NOW, TUNING) == ()
    held = {"default": planner.QueueGate(held=True)}
    assert decision.early_scale_up(look, queues, spec, NO_PROXY, memory, NOW, TUNING, held) == ()

"""The Events CloudPilot posts about a pool: what ``kubectl describe`` shows a site admin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudpilot import leader, redaction
from cloudpilot.cycle_events import Event
from cloudpilot.kube import events, handlers
from cloudpilot.kube.events import MAX_EVENT_MESSAGE, EventRecorder, build_event
from cloudpilot.reasons import Reason
from cloudpilot.reconciler import PoolRef

POOL: dict[str, Any] = {
    "apiVersion": "cloudpilot.io/v1alpha1",
    "kind": "CloudPilotPool",
    "metadata": {"name": "lhcb", "namespace": "grid", "uid": "u-1", "generation": 2},
}
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_an_event_points_at_the_pool_and_says_who_posted_it() -> None:
    event = build_event(POOL, "Normal", "Created", "created 3 VM(s)", NOW)

    assert event["involvedObject"] == {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "name": "lhcb",
        "namespace": "grid",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal",
        "Created",
        "created 3 VM(s)",
    )
    assert event["source"] == {"component": "cloudpilot"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-21T12:00:00Z"
    assert event["metadata"] == {"generateName": "cloudpilot-event-"}


def test_a_secret_in_a_message_is_masked_and_a_long_message_cut() -> None:
    redaction.register("test-events", ["s3cr3t-access-key-value"])
    try:
        event = build_event(
            POOL,
            "Warning",
            "CloudError",
            "rejected s3cr3t-access-key-value " + "retry. " * 500,
            NOW,
        )
    finally:
        redaction.forget("test-events")

    assert "s3cr3t-access-key-value" not in event["message"]
    assert len(event["message"]) == MAX_EVENT_MESSAGE


# -- aggregation -----------------------------------------------------------------------------


class FakeEventApi:
    """The API server's Events: creates get a name, patches merge, a deleted one is 404."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def create(self, namespace: str, event: dict[str, Any]) -> str:
        name = f"cloudpilot-event-{len(self.events)}"
        self.events[name] = dict(event)
        self.calls.append("create")
        return name

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append("patch")
        if name not in self.events:
            raise LookupError(name)
        self.events[name].update(patch)


def _recorder(clock: list[float], **kwargs: Any) -> tuple[EventRecorder, FakeEventApi]:
    api = FakeEventApi()
    return EventRecorder(api, clock=lambda: clock[0], **kwargs), api


async def test_a_repeated_event_bumps_count_and_last_timestamp_of_one_event() -> None:
    clock = [0.0]
    recorder, api = _recorder(clock)
    await recorder.post("grid", build_event(POOL, "Warning", "CreateFailed", "quota", NOW))
    clock[0] += 30
    later = NOW + timedelta(seconds=30)
    await recorder.post("grid", build_event(POOL, "Warning", "CreateFailed", "quota", later))

    assert api.calls == ["create", "patch"]
    [event] = api.events.values()
    assert event["count"] == 2
    assert event["firstTimestamp"] == "2026-11-21T12:00:00Z"
    assert event["lastTimestamp"] == "2026-11-21T12:00:30Z"


async def test_a_different_message_reason_or_pool_is_an_event_of_its_own() -> None:
    recorder, api = _recorder([0.0])
    other_pool = {**POOL, "metadata": {**POOL["metadata"], "name": "cms", "uid": "u-2"}}
    await recorder.post("grid", build_event(POOL, "Warning", "CreateFailed", "quota", NOW))
    await recorder.post("grid", build_event(POOL, "Warning", "CreateFailed", "capacity", NOW))
    await recorder.post("grid", build_event(POOL, "Warning", "DeleteFailed", "quota", NOW))
    await recorder.post("grid", build_event(other_pool, "Warning", "CreateFailed", "quota", NOW))

    assert api.calls == ["create"] * 4
    assert {e["count"] for e in api.events.values()} == {1}


async def test_after_the_window_or_a_404_a_repeat_is_created_anew() -> None:
    clock = [0.0]
    recorder, api = _recorder(clock, window=600.0)
    await recorder.post("grid", build_event(POOL, "Normal", "Created", "vm", NOW))
    clock[0] += 601
    await recorder.post("grid", build_event(POOL, "Normal", "Created", "vm", NOW))
    assert api.calls == ["create", "create"]

    api.events.clear()  # expired on the API server (its TTL)
    await recorder.post("grid", build_event(POOL, "Normal", "Created", "vm", NOW))
    assert api.calls == ["create", "create", "patch", "create"]
    [event] = api.events.values()
    assert event["count"] == 1


class SlowEventApi(FakeEventApi):
    """Each call answers only after every post under test has started (real requests
    overlap: two cycles, or a cycle and teardown, post the same event at once)."""

    def __init__(self, posts: int) -> None:
        super().__init__()
        self.posts = posts
        self.started = 0
        self.all_started = asyncio.Event()

    def post_started(self) -> None:
        self.started += 1
        if self.started == self.posts:
            self.all_started.set()

    async def create(self, namespace: str, event: dict[str, Any]) -> str:
        await self.all_started.wait()
        return await super().create(namespace, event)

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.all_started.wait()
        await super().patch(namespace, name, patch)


async def test_concurrent_posts_of_one_event_count_each_repeat() -> None:
    api = SlowEventApi(posts=4)
    recorder = EventRecorder(api, clock=lambda: 0.0)
    event = build_event(POOL, "Warning", "CreateFailed", "quota", NOW)

    async def post() -> None:
        api.post_started()
        await recorder.post("grid", dict(event))

    api.all_started.set()
    await recorder.post("grid", dict(event))  # posted once before: the rest aggregate
    api.all_started.clear()
    await asyncio.gather(*(post() for _ in range(4)))

    assert api.calls == ["create"] + ["patch"] * 4
    [posted] = api.events.values()
    assert posted["count"] == 5
    assert recorder._posting == {}, "a per-event lock outlived its posts"


async def test_concurrent_first_posts_of_one_event_create_it_once() -> None:
    api = SlowEventApi(posts=2)
    recorder = EventRecorder(api, clock=lambda: 0.0)
    event = build_event(POOL, "Normal", "Created", "vm", NOW)

    async def post() -> None:
        api.post_started()
        await recorder.post("grid", dict(event))

    await asyncio.gather(post(), post())

    assert api.calls == ["create", "patch"]
    [posted] = api.events.values()
    assert posted["count"] == 2


async def test_the_cache_of_recent_events_is_bounded() -> None:
    recorder, api = _recorder([0.0], capacity=2)
    for message in ("a", "b", "c"):
        await recorder.post("grid", build_event(POOL, "Normal", "Created", message, NOW))
    await recorder.post("grid", build_event(POOL, "Normal", "Created", "a", NOW))  # forgotten
    await recorder.post("grid", build_event(POOL, "Normal", "Created", "c", NOW))  # remembered

    assert api.calls == ["create"] * 4 + ["patch"]
    assert len(recorder._recent) == 2


async def test_a_cycle_posts_its_events_before_it_writes_the_status_they_explain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever sees the condition can then find its Event; a failed status write loses none."""
    calls: list[str] = []

    class Api:
        async def create(self, namespace: str, event: dict[str, Any]) -> str:
            calls.append(f"event {event['reason']}")
            return "e-1"

        async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
            raise AssertionError("nothing to aggregate")

    async def write_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
        calls.append(f"status {sorted(patch)}")
        raise RuntimeError("the API server said no")

    monkeypatch.setattr(events, "recorder", EventRecorder(Api()))
    monkeypatch.setattr(handlers, "patch_status", write_status)
    pool = PoolRef("grid", "lhcb", "u-1")
    stalled = Event("Warning", Reason.BAD_CREDENTIALS, "AuthFailure")
    with pytest.raises(RuntimeError):
        await handlers.publish(pool, POOL, [stalled], {"conditions": []})
    assert calls == ["event BadCredentials", "status ['conditions']"]


async def test_a_lease_lost_while_the_events_go_out_stops_the_writes_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler checks the Lease once, after the cycle; posting Events takes awaits (a
    slow API server: up to a call timeout each). A replica whose Lease lapsed meanwhile
    sends no further Event and no status: the new leader's would be overwritten by it."""
    calls: list[str] = []

    class Elector:
        leading = True

        def is_leading(self) -> bool:
            return self.leading

    elector = Elector()

    class Api:
        async def create(self, namespace: str, event: dict[str, Any]) -> str:
            calls.append(f"event {event['reason']}")
            elector.leading = False  # the Lease lapses while this one is on the wire
            return "e-1"

        async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
            raise AssertionError("nothing to aggregate")

    async def write_status(namespace: str, name: str, patch: dict[str, Any]) -> bool:
        calls.append("status")
        return True

    monkeypatch.setattr(events, "recorder", EventRecorder(Api()))
    monkeypatch.setattr(handlers, "patch_status", write_status)
    token = leader._current.set(elector)  # type: ignore[arg-type]
    try:
        written = await handlers.publish(
            PoolRef("grid", "lhcb", "u-1"),
            POOL,
            [
                Event("Normal", Reason.CREATED, "Created VM a"),
                Event("Normal", Reason.CREATED, "Created VM b"),
            ],
            {"replicas": 2},
        )
    finally:
        leader._current.reset(token)
    assert calls == ["event Created"]
    assert written is False

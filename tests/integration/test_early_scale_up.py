"""The early scale-up end to end (cloudpilot.early_create), on the real API server + moto:
a ``kubectl scale`` is created from the last listing and the operator's memory, beside the
new listing; rapid patches, a restart half-way and a pool applied again over orphaned VMs
never give the pool more VMs than it asked for.

"Never more" is checked on the cloud's own record: moto keeps terminated instances listed,
so every VM the pool ever had is counted at the end. A duplicate, even one deleted again as
surplus, would show.
"""

from __future__ import annotations

from tests.support.kube import wait_for
from tests.support.stack import Stack


def _ever(stack: Stack, pool: str) -> int:
    return len(stack.vms(pool, include_gone=True))


def test_rapid_scale_patches_and_a_restart_never_exceed_replicas(stack: Stack) -> None:
    stack.apply_pool("rapid", replicas=1)
    stack.wait_settled("rapid", 1)
    for replicas in (2, 3, 4, 5):  # kubectl scale, as fast as the API server takes them
        stack.scale_pool("rapid", replicas)
    # Stopped wherever it is: between patches, mid-create or mid-listing.
    stack.stop_operator()
    stack.start_operator()
    for replicas in (6, 7, 8):
        stack.scale_pool("rapid", replicas)
    stack.wait_settled("rapid", 8)
    # The new operator knew nothing after the restart: it listed first. Now it has a last
    # look: this scale-up goes out beside its listing (the path under test is taken).
    early_before = sum(r.early_scale_ups for r in stack.reconcilers)
    stack.scale_pool("rapid", 9)
    stack.wait_settled("rapid", 9)
    assert sum(r.early_scale_ups for r in stack.reconcilers) > early_before
    assert _ever(stack, "rapid") == 9


def test_a_pool_applied_again_adopts_its_orphans_before_it_scales(stack: Stack) -> None:
    """A new pool object (a new uid) over VMs left by ``deletionPolicy: Orphan``: no last
    look, so its first cycle lists and adopts them; the scale-ups after it go out early."""
    stack.apply_pool("again", replicas=3, deletionPolicy="Orphan")
    stack.wait_settled("again", 3)
    stack.delete_pool("again")
    wait_for(lambda: stack.pool("again") is None, 30, message="the pool gone")
    assert len(stack.live_vms("again")) == 3  # orphaned, still running
    early_before = sum(r.early_scale_ups for r in stack.reconcilers)

    stack.apply_pool("again", replicas=3, deletionPolicy="Orphan")
    for replicas in (4, 5):
        stack.scale_pool("again", replicas)
    stack.wait_settled("again", 5)
    stack.scale_pool("again", 6)
    stack.wait_settled("again", 6)
    assert sum(r.early_scale_ups for r in stack.reconcilers) > early_before
    assert _ever(stack, "again") == 6  # 3 adopted, 3 created, none twice

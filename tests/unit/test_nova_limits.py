"""Nova's absolute limits read as headroom (the reader issue 13's closed loop can use)."""

from __future__ import annotations

from cloudpilot.cloud.nova_limits import Headroom, headroom

NOVA_ANSWER = {
    "limits": {
        "rate": [],
        "absolute": {
            "maxTotalInstances": 10,
            "totalInstancesUsed": 3,
            "maxTotalCores": 20,
            "totalCoresUsed": 6,
            "maxTotalRAMSize": 51200,
            "totalRAMUsed": 6144,
            "maxServerMeta": 128,
        },
    }
}


def test_headroom_from_a_nova_answer() -> None:
    room = headroom(NOVA_ANSWER)
    assert room == Headroom(instances=7, cores=14, ram_mb=45056)
    assert room == headroom(NOVA_ANSWER["limits"]["absolute"])  # the absolute part alone


def test_vms_that_fit_take_the_tightest_limit() -> None:
    room = headroom(NOVA_ANSWER)
    assert room.vms_that_fit(vcpus=1, ram_mb=2048) == 7  # instances
    assert room.vms_that_fit(vcpus=4, ram_mb=2048) == 3  # cores: 14 // 4
    assert room.vms_that_fit(vcpus=1, ram_mb=16384) == 2  # RAM: 45056 // 16384


def test_unlimited_and_missing_limits_do_not_bound() -> None:
    room = headroom({"absolute": {"maxTotalInstances": -1, "maxTotalCores": 8}})
    assert room == Headroom(instances=None, cores=8, ram_mb=None)
    assert room.vms_that_fit(vcpus=2, ram_mb=4096) == 4
    assert headroom({}).vms_that_fit(vcpus=2, ram_mb=4096) is None


def test_usage_over_a_lowered_quota_is_no_room() -> None:
    room = headroom({"absolute": {"maxTotalInstances": 2, "totalInstancesUsed": 5}})
    assert room.instances == 0
    assert room.vms_that_fit(vcpus=1, ram_mb=1) == 0


def test_a_flavor_without_cores_or_ram_is_bounded_by_instances_only() -> None:
    room = headroom(NOVA_ANSWER)
    assert room.vms_that_fit(vcpus=0, ram_mb=0) == 7

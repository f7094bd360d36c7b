"""Run CloudPilot's performance benchmark: ``python -m bench --quick`` (or ``--full``).

Prints one table per scenario (ratios first: they hold on a noisy machine, absolute times do
not) and writes every figure to a JSON file. Not part of the test suite: nothing here is
asserted; the targets are reported as met or not.

--quick   bring-up N = 50, 200, 500 at 0, 100, 500 ms with long baselines *sampled* (first
          20 one-at-a-time calls timed, the rest extrapolated); status and scale-to-zero at
          100 ms for N = 50, 200; steady state with 1, 100, 1,000 pools; operator RSS with
          --pools pools (default 200). About 8 minutes on 2 cores plus the operator run.
--full    the same with every baseline run in full (the 500-pilot x 500 ms baseline alone
          is over four minutes), status and scale-to-zero also for N = 500. About 25 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import closedloop, cloud_ops, faults, kube_scenarios, operator_scale
from bench.common import emulated_cloud

TARGETS = {
    "speedup_200_at_500ms": 20.0,
    "speedup_50_at_100ms": 5.0,
    "bring_up_vs_floor": 1.5,
    "rss_mb_1000_pools": 150.0,
}


def _machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _print_ops(results: list[cloud_ops.Result]) -> None:
    print(
        f"{'scenario':<14}{'N':>5}{'ms':>5} | {'speedup':>8}{'vs floor':>9} | "
        f"{'base s':>8}{'calls':>6} {'':<9}| {'ours s':>7}{'calls':>6} | {'floor s':>8}"
    )
    for r in results:
        sampled = f"~{r.baseline.sampled}" if r.baseline.sampled else ""
        print(
            f"{r.scenario:<14}{r.n:>5}{r.latency_ms:>5} | {r.speedup:>7.1f}x{r.vs_floor:>8.2f}x | "
            f"{r.baseline.seconds:>8.2f}{r.baseline.calls:>6} {sampled:<9}| "
            f"{r.cloudpilot.seconds:>7.2f}{r.cloudpilot.calls:>6} | {r.floor.seconds:>8.2f}"
        )
        for label, part in (
            ("  scale-up", r.scale_up),
            ("  new pool, listed acct", r.listed_account),
            ("  gateway", r.gateway),
        ):
            if part is not None:
                print(
                    f"{label:<24} | {r.baseline.seconds / part.seconds:>7.1f}x"
                    f"{part.seconds / r.floor.seconds:>8.2f}x | {'':<24}| "
                    f"{part.seconds:>7.2f}{part.calls:>6} |"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="sampled baselines (default)")
    mode.add_argument("--full", action="store_true", help="every baseline in full")
    parser.add_argument(
        "--only",
        choices=[
            "bring-up",
            "status",
            "scale-to-zero",
            "steady",
            "operator",
            "faults",
            "scale-to-wire",
            "manypools",
            "restart",
            "closedloop",
        ],
        action="append",
        help="run only these scenarios (repeatable)",
    )
    parser.add_argument(
        "--pools",
        type=int,
        default=None,
        help="pools for the operator run (default 200: the Kubernetes emulator slows down "
        "past a few hundred objects; RSS is then projected linearly to 1,000) and for "
        "manypools and restart (default 10,000, on a real kube-apiserver)",
    )
    parser.add_argument(
        "--runs", type=int, default=20, help="scale-to-wire: kubectl scale runs (default 20)"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=100, help="scale-to-wire: cloud latency (default 100)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args(argv)
    full = bool(args.full)
    # manypools, restart (minutes, thousands of objects on a real API server): when asked.
    default = ["bring-up", "status", "scale-to-zero", "steady", "operator", "faults", "closedloop"]
    only = set(args.only or [*default, "scale-to-wire"])
    operator_pools = args.pools or 200
    budget = 600.0 if full else 15.0  # seconds a one-at-a-time baseline may run in full
    sample = 20
    logging.basicConfig(level=logging.WARNING)

    report: dict[str, Any] = {"machine": _machine(), "mode": "full" if full else "quick"}
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    report["command"] = command
    print(f"command: {command}")
    print(f"machine: {report['machine']}  mode: {report['mode']}")
    ops: list[cloud_ops.Result] = []
    with emulated_cloud() as cloud:
        if "bring-up" in only:
            for latency in (0.0, 0.1, 0.5):
                for n in (50, 200, 500):
                    ops.append(cloud_ops.bring_up(cloud, n, latency, budget=budget, sample=sample))
                    print(f"  bring-up N={n} at {latency * 1000:.0f} ms done", file=sys.stderr)
        sizes = (50, 200, 500) if full else (50, 200)
        for name, fn in (("status", cloud_ops.status), ("scale-to-zero", cloud_ops.scale_to_zero)):
            if name in only:
                for n in sizes:
                    ops.append(fn(cloud, n, 0.1, budget=budget, sample=sample))
        if ops:
            print("\n== cloud operations (baseline = one call per VM, in sequence) ==")
            _print_ops(ops)
            report["operations"] = [r.as_dict() for r in ops]

        if "steady" in only:
            print("\n== steady state, one account (reconciler, all pools each cycle) ==")
            steady = [operator_scale.steady_state(cloud, pools) for pools in (1, 100, 1000)]
            print(
                f"{'pools':>6}{'pilots':>7} | {'calls/cycle':>11}{'Describe/cycle':>15} | "
                f"{'original':>9}{'list per pool':>14}"
            )
            for s in steady:
                print(
                    f"{s.pools:>6}{s.pilots:>7} | {s.calls_per_cycle:>11}"
                    f"{s.describe_instances_per_cycle:>15} | {s.original_calls_per_cycle:>9}"
                    f"{s.per_pool_listing_calls_per_cycle:>14}"
                )
            report["steady_state"] = [asdict(s) for s in steady]

        if "operator" in only:
            interval = 20.0 if full else 15.0
            idle, phases, log = operator_scale.operator_at_scale(
                cloud, operator_pools, interval=interval, window_cycles=3 if full else 2
            )
            print(f"\n== the operator in a subprocess, {operator_pools} pools on one account ==")
            print(f"idle RSS (no pool): {idle} MiB   log: {log}")
            for p in phases:
                print(
                    f"{p.phase}: RSS {p.rss_mb} MiB (peak {p.peak_rss_mb}), all reconciled "
                    f"in {p.converge_seconds} s, DescribeInstances per {p.interval:g} s "
                    f"cycle: {p.describe_instances_per_cycle}, other calls: {p.other_calls}"
                )
            worst = max(p.rss_mb for p in phases)
            per_pool = (worst - idle) / operator_pools
            projected = round(idle + per_pool * 1000, 1)
            if operator_pools != 1000:
                print(
                    f"projected to 1,000 pools (linear from idle to {operator_pools} pools, "
                    f"{per_pool * 1024:.0f} KiB per pool): {projected} MiB"
                )
            report["operator"] = {
                "idle_rss_mb": idle,
                "pools": operator_pools,
                "kib_per_pool": round(per_pool * 1024, 1),
                "projected_rss_mb_1000_pools": projected,
                "phases": [asdict(p) for p in phases],
            }

        if "scale-to-wire" in only:
            wire = kube_scenarios.scale_to_wire(
                cloud, runs=args.runs, latency=args.latency_ms / 1000
            )
            data = wire.as_dict()
            print(
                f"\n== kubectl scale -> RunInstances on the wire (real kube-apiserver, "
                f"{wire.latency_ms} ms per cloud call, {wire.runs} runs) =="
            )
            print(
                f"median {data['median_ms']} ms, p95 {data['p95_ms']} ms, "
                f"min {data['min_ms']} ms, max {data['max_ms']} ms "
                f"(target: 50 ms + one round trip = {50 + wire.latency_ms} ms)"
            )
            report["scale_to_wire"] = data
        if "manypools" in only:
            pools = args.pools or 10_000
            many = kube_scenarios.many_pools(cloud, pools)
            print(f"\n== {pools} pools on one account, real kube-apiserver ==")
            print(
                f"created in {many.create_seconds} s; all reconciled {many.converge_seconds} s "
                f"after the first was created; RSS {many.idle_rss_mb} MiB idle, "
                f"{many.rss_mb} MiB after (peak {many.peak_rss_mb}); per {many.interval:g} s "
                f"interval: DescribeInstances {many.describe_instances_per_cycle}, pools "
                f"written {many.pools_written_per_cycle}; other calls {many.other_calls}"
            )
            report["manypools"] = asdict(many)
        if "restart" in only:
            pools = args.pools or 10_000
            again = kube_scenarios.restart(cloud, pools)
            print(f"\n== the operator started against {pools} pools, real kube-apiserver ==")
            print(f"created (no operator running) in {again.create_seconds} s")
            for start in again.phases:
                print(
                    f"{start.phase}: all reconciled {start.reconciled_seconds} s after the start; "
                    f"RSS peak {start.peak_rss_mb} MiB, {start.rss_mb} MiB settled; "
                    f"DescribeInstances {start.listings}, pools written {start.pools_written}; "
                    f"other calls {start.other_calls}; timeline {start.timeline}"
                )
            report["restart"] = asdict(again)

    if "faults" in only:
        run = faults.converge_under_faults()
        print(f"\n== {run.n} VMs under the fault mix (bench/faults.py), 50 ms per call ==")
        print(
            f"converged in {run.seconds:.1f} s over {run.cycles} cycles; most VMs live at "
            f"once: {run.max_live} (asked {run.n}); VMs ever created: {run.created_total}; "
            f"RunInstances sent: {run.run_instances}; "
            f"faults served: {run.faults}"
        )
        report["faults"] = run.as_dict()

    if "closedloop" in only:
        loop = closedloop.run()
        print("\n== the closed loop (bench/closedloop.py) ==")
        for r in loop["no_work"]:
            kind = "closed" if r["closed_loop"] else "open"
            print(
                f"no work, {kind} loop: {r['vms_created']} VMs created in {r['hours']:g} h of the "
                f"operator's clock ({r['replicas']} replicas, {r['cycles']} cycles, "
                f"{r['run_instances']} RunInstances)"
            )
        fill = loop["quota_fill"]
        print(
            f"quota {fill['quota']}, replicas {fill['replicas']}: {fill['live']} live after "
            f"{fill['seconds']} s, {fill['cycles']} cycle(s), {fill['run_instances']} "
            f"RunInstances; then {fill['state']}: {fill['message']}"
        )
        report["closed_loop"] = loop

    report["targets"] = _targets(report)
    print("\n== targets ==")
    for name, verdict in report["targets"].items():
        print(f"{name}: {verdict}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures written to {args.json}")
    return 0


def _targets(report: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    ops = {(o["scenario"], o["n"], o["latency_ms"]): o for o in report.get("operations", [])}
    for key, n, ms, target in (
        ("speedup_200_at_500ms", 200, 500, TARGETS["speedup_200_at_500ms"]),
        ("speedup_50_at_100ms", 50, 100, TARGETS["speedup_50_at_100ms"]),
    ):
        o = ops.get(("bring-up", n, ms))
        if o:
            out[key] = (
                f"{o['speedup']}x new pool, {o['scale_up_speedup']}x scale-up "
                f"(target >= {target}x): {'met' if o['speedup'] >= target else 'NOT met'}"
            )
    ups = [o for o in ops.values() if o["scenario"] == "bring-up"]
    if ups:
        worst_gw = max(o["gateway_vs_floor"] for o in ups)
        worst_cycle = max(o["vs_floor"] for o in ups)
        worst_up = max(o["scale_up_vs_floor"] for o in ups)
        worst_listed = max(o.get("listed_account_vs_floor", 0.0) for o in ups)
        out["bring_up_vs_floor"] = (
            f"gateway create worst {worst_gw}x, first pool's cycle incl. its listing worst "
            f"{worst_cycle}x, scale-up worst {worst_up}x, new pool on a listed account "
            f"worst {worst_listed}x (target <= {TARGETS['bring_up_vs_floor']}x): gateway "
            f"{'met' if worst_gw <= TARGETS['bring_up_vs_floor'] else 'NOT met'}"
        )
    for o in ops.values():
        if o["scenario"] == "status":
            out[f"status_{o['n']}_calls"] = f"{o['cloudpilot']['calls']} call(s) (target 1)"
    for s in report.get("steady_state", []):
        out[f"steady_{s['pools']}_pools"] = (
            f"{s['describe_instances_per_cycle']} DescribeInstances per cycle (target 1)"
        )
    if "faults" in report:
        run = report["faults"]
        ok = run["seconds"] <= 60 and max(run["max_live"], run["created_total"]) <= run["n"]
        out["faults_50_vms"] = (
            f"{run['seconds']:.1f} s, at most {run['max_live']} of {run['n']} VMs "
            f"(target <= 60 s, never above {run['n']}): {'met' if ok else 'NOT met'}"
        )
    if "closed_loop" in report:
        ratio = report["closed_loop"]["no_work_ratio"]
        out["closed_loop_no_work"] = (
            f"{ratio:.1%} of the open loop's VMs (target <= 5%): "
            f"{'met' if ratio <= 0.05 else 'NOT met'}"
        )
    if "operator" in report:
        op = report["operator"]
        worst = max(p["rss_mb"] for p in op["phases"])
        value = worst if op["pools"] == 1000 else op["projected_rss_mb_1000_pools"]
        how = "measured" if op["pools"] == 1000 else f"projected from {op['pools']} pools"
        out["rss_mb_1000_pools"] = (
            f"{value} MiB {how} (target <= {TARGETS['rss_mb_1000_pools']}): "
            f"{'met' if value <= TARGETS['rss_mb_1000_pools'] else 'NOT met'}"
        )
    if "scale_to_wire" in report:
        wire = report["scale_to_wire"]
        bound = 50 + wire["latency_ms"]
        out["scale_to_wire"] = (
            f"median {wire['median_ms']} ms, p95 {wire['p95_ms']} ms (target <= {bound} ms): "
            f"{'met' if wire['p95_ms'] <= bound else 'NOT met'} at p95"
        )
    if "manypools" in report:
        many = report["manypools"]
        ok = many["rss_mb"] <= 300 and many["describe_instances_per_cycle"] <= 1
        out["manypools"] = (
            f"{many['pools']} pools: RSS {many['rss_mb']} MiB (target <= 300), "
            f"{many['describe_instances_per_cycle']} listings per interval (target 1), all "
            f"reconciled in {many['converge_seconds']} s (target: one interval, "
            f"{many['interval']:g} s): "
            f"{'met' if ok and many['converge_seconds'] <= many['interval'] else 'NOT met'}"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())

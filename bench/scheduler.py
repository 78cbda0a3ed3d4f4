"""One scheduling cycle (the pure policy) at 1,000 / 10,000 / 100,000 queued jobs over 100 / 1,000 /
5,000 GPU nodes: p50/p99 milliseconds per cycle, and how it grows.

The cluster is busy (about 80 % of GPUs held by running jobs with timeouts), the queue mixes shapes,
types, priorities, 200 users in 10 groups with quotas: the cycle must order, place, reserve and explain.
Baseline, in the same run: a naive first-fit that scans every node for every queued job (what a
scheduler without capacity indexes does), at the sizes where it finishes in reasonable time.
Target (DESIGN §6): ≤ 50 ms at 10,000 jobs x 1,000 nodes, growing no worse than n log n.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics

from common import timed_ms

from gpujobs.gputypes import satisfies
from gpujobs.inventory import Device, Node
from gpujobs.scheduler.policy import PolicyConfig, Quota, Request, Running, Snapshot, decide

TYPES = [("a100-80gb", 8), ("h100-80gb", 8), ("t4", 4), ("l4", 4)]
QUOTAS = [Quota(max_gpus=16, max_running_jobs=20), Quota(max_gpus=4), Quota()]


def build(queued: int, nodes: int, seed: int = 1) -> tuple[list[Request], Snapshot]:
    rng = random.Random(seed)
    node_list = []
    for i in range(nodes):
        gpu_type, count = TYPES[i % len(TYPES)]
        devices = tuple(Device(str(d), gpu_type, gpu_type.upper()) for d in range(count))
        node_list.append(Node(f"node-{i:05d}", devices, cpu_cores=96))
    now = 1_000_000.0
    running = []
    for node in node_list:
        held = [d.index for d in node.devices if rng.random() < 0.8]
        for start in range(0, len(held), 2):
            gpus = tuple(held[start : start + 2])
            running.append(
                Running(
                    f"r-{node.name}-{start}",
                    f"user{rng.randrange(200)}",
                    node.name,
                    gpus,
                    len(gpus),
                    0.0,
                    f"group{rng.randrange(10)}",
                    ends_at=now + rng.uniform(60, 86400),
                )
            )
    requests = []
    for seq in range(queued):
        user = rng.randrange(200)
        gpus = rng.choices([1, 2, 4, 8], weights=[50, 25, 15, 10])[0]
        gpu_type = (
            rng.choice(["any", "a100", "h100-80gb", "t4", "l4"])
            if gpus <= 4
            else rng.choice(["a100", "h100"])
        )
        requests.append(
            Request(
                job_id=f"q{seq:06d}",
                gpu_count=gpus,
                gpu_type=gpu_type,
                user=f"user{user}",
                group=f"group{user % 10}",
                priority=rng.choice([0, 1, 1, 1, 2]),
                submitted_at=now - rng.uniform(0, 7200),
                runtime_limit=rng.uniform(300, 86400),
                quota=QUOTAS[user % len(QUOTAS)],
                seq=seq,
            )
        )
    usage = {f"user{u}": rng.uniform(0, 1e6) for u in range(200)}
    groups = {f"group{g}": rng.uniform(0, 1e7) for g in range(10)}
    return requests, Snapshot(tuple(node_list), tuple(running), usage, groups, now)


def naive_first_fit(requests: list[Request], snapshot: Snapshot) -> int:
    """For every job, scan every node for enough free matching devices (no indexes, no reservations)."""
    held = {(job.node, gpu) for job in snapshot.running for gpu in job.gpus}
    free = {
        node.name: [d for d in node.devices if (node.name, d.index) not in held] for node in snapshot.nodes
    }
    admitted = 0
    for request in sorted(requests, key=lambda r: (-r.priority, r.seq)):
        for name, devices in free.items():
            matching = [d for d in devices if satisfies(d.gpu_type, request.gpu_type)]
            if len(matching) >= request.gpu_count:
                taken = {d.index for d in matching[: request.gpu_count]}
                free[name] = [d for d in devices if d.index not in taken]
                admitted += 1
                break
    return admitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    options = parser.parse_args()
    sizes = [(1_000, 100), (10_000, 1_000), (100_000, 5_000)]
    if options.quick:
        sizes = sizes[:2]
    config = PolicyConfig(
        aging_interval_seconds=3600, group_shares={f"group{g}": 1 + g % 3 for g in range(10)}
    )
    results = []
    for queued, nodes in sizes:
        requests, snapshot = build(queued, nodes)
        repeats = 3 if queued >= 100_000 else (5 if options.quick else 15)
        samples = timed_ms(lambda r=requests, s=snapshot: decide(r, s, config), repeats)
        decision = decide(requests, snapshot, config)
        row = {
            "queued": queued,
            "nodes": nodes,
            "gpus": sum(len(n.devices) for n in snapshot.nodes),
            "admitted": len(decision.admissions),
            "p50_ms": round(statistics.median(samples), 1),
            "p99_ms": round(max(samples), 1),
        }
        if queued * nodes <= 10_000_000:
            baseline = timed_ms(
                lambda r=requests, s=snapshot: naive_first_fit(r, s), 1 if queued >= 10_000 else 3
            )
            row["baseline_naive_ms"] = round(statistics.median(baseline), 1)
            row["ratio_to_baseline"] = round(row["p50_ms"] / row["baseline_naive_ms"], 3)
        results.append(row)
        print(
            f"  {queued:>7} queued x {nodes:>5} nodes: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
            f"{row['admitted']} admitted"
            + (f" (naive first-fit: {row['baseline_naive_ms']} ms)" if "baseline_naive_ms" in row else "")
        )
    for previous, current in itertools.pairwise(results):
        n0, n1 = previous["queued"], current["queued"]
        current["growth"] = round(current["p50_ms"] / previous["p50_ms"], 2)
        current["n_log_n_growth"] = round((n1 * max(1, n1.bit_length())) / (n0 * max(1, n0.bit_length())), 2)
    print(json.dumps({"cycles": results}))


if __name__ == "__main__":
    main()

"""The admission policy, with readable builders; no I/O anywhere."""

from __future__ import annotations

import builders
from gpujobs.scheduler.policy import PolicyConfig, Pool, Quota, Request, Running, Snapshot, decide

HOUR = 3600.0


GI = builders.GI
node = builders.node


job = builders.request


def jobs(*requests: Request) -> list[Request]:
    """Give requests increasing submission order, as the queue does."""
    return [Request(**{**r.__dict__, "seq": i}) for i, r in enumerate(requests)]


def running(
    job_id: str,
    node_name: str,
    *gpus: str,
    user: str = "u",
    cpu: float = 0,
    memory: float = 0,
    ends_at: float | None = None,
    group: str = "g",
) -> Running:
    return Running(
        job_id=job_id,
        user=user,
        node=node_name,
        gpus=gpus,
        gpu_count=len(gpus),
        cpu=cpu,
        ends_at=ends_at,
        group=group,
        memory=memory,
    )


def admitted(decision) -> dict[str, str | None]:
    return {a.job_id: a.node for a in decision.admissions}


def reasons(decision) -> dict[str, str]:
    return {w.job_id: w.reason for w in decision.waiting}


# --- capacity ----------------------------------------------------------------------------------------


def test_jobs_are_admitted_in_order_while_gpus_last() -> None:
    decision = decide(jobs(job("a"), job("b"), job("c")), Snapshot(nodes=(node("n1", "t4", "t4"),)))
    assert [(a.job_id, a.gpus) for a in decision.admissions] == [("a", ("0",)), ("b", ("1",))]
    assert [(w.job_id, w.position) for w in decision.waiting] == [("c", 1)]
    assert decision.waiting[0].reason == "no free GPU: 0 of 2 free, 1 needed"


def test_held_gpus_are_never_given_twice() -> None:
    snapshot = Snapshot(nodes=(node("n1", "a100", "a100"),), running=(running("r", "n1", "0"),))
    decision = decide(jobs(job("a", gpu_type="a100"), job("b", gpu_type="a100")), snapshot)
    assert [(a.job_id, a.gpus) for a in decision.admissions] == [("a", ("1",))]
    assert reasons(decision)["b"] == "no free a100: 0 of 2 free, 1 needed"


def test_type_routing_and_family_match() -> None:
    nodes = (node("small", "t4"), node("big", "a100-80gb", "a100-80gb"))
    decision = decide(
        jobs(job("fam", gpu_type="a100"), job("exact", gpu_type="a100-80gb"), job("t", gpu_type="t4")),
        Snapshot(nodes=nodes),
    )
    assert admitted(decision) == {"fam": "big", "exact": "big", "t": "small"}


def test_multi_gpu_jobs_need_them_on_one_node() -> None:
    decision = decide(jobs(job("pair", gpus=2)), Snapshot(nodes=(node("n1", "t4"), node("n2", "t4"))))
    assert not decision.admissions
    assert "on one node" in decision.waiting[0].reason


def test_tightest_fit_keeps_big_blocks_whole() -> None:
    nodes = (node("four", "t4", "t4", "t4", "t4"), node("one", "t4"))
    decision = decide(jobs(job("small"), job("big", gpus=4)), Snapshot(nodes=nodes))
    assert admitted(decision) == {"small": "one", "big": "four"}


def test_cordoned_and_not_ready_nodes_offer_nothing() -> None:
    nodes = (node("cordoned", "t4", schedulable=False), node("down", "t4", ready=False))
    decision = decide(jobs(job("a", gpu_type="t4")), Snapshot(nodes=nodes))
    assert "cordoned or not ready" in decision.waiting[0].reason


def test_unknown_type_says_so() -> None:
    decision = decide(jobs(job("a", gpu_type="h100")), Snapshot(nodes=(node("n", "t4"),)))
    assert decision.waiting[0].reason == "can never start here: no node has h100 GPUs"


def test_cpu_reservations_are_respected() -> None:
    snapshot = Snapshot(nodes=(node("n", cpu=2),), running=(running("r", "n", cpu=1.5),))
    decision = decide(jobs(job("cpu-job", gpus=0, cpu=1), job("tiny", gpus=0, cpu=0.5)), snapshot)
    assert list(admitted(decision)) == ["tiny"]
    assert reasons(decision)["cpu-job"] == "waiting for CPU: needs 1 cores, at most 0.5 free on one node"


def test_jobs_admitted_in_one_cycle_on_one_node_must_all_fit_its_cores() -> None:
    node_of_4 = Snapshot(nodes=(node("n", cpu=4),))
    exactly = decide(jobs(job("a", gpus=0, cpu=2), job("b", gpus=0, cpu=2)), node_of_4)
    assert admitted(exactly) == {"a": "n", "b": "n"}  # 2 + 2 fills the node exactly
    over = decide(jobs(job("a", gpus=0, cpu=2), job("b", gpus=0, cpu=2.5)), node_of_4)
    assert admitted(over) == {"a": "n"}  # 2 + 2.5 would not fit: the second waits
    assert reasons(over)["b"] == "waiting for CPU: needs 2.5 cores, at most 2 free on one node"


def test_running_jobs_sharing_a_node_leave_it_their_sum_of_cores_less() -> None:
    running_two = (running("r1", "n", cpu=1), running("r2", "n", cpu=1.5))
    snapshot = Snapshot(nodes=(node("n", cpu=4),), running=running_two)
    assert admitted(decide(jobs(job("fits", gpus=0, cpu=1.5)), snapshot)) == {"fits": "n"}
    assert admitted(decide(jobs(job("over", gpus=0, cpu=1.6)), snapshot)) == {}


def test_a_job_bigger_than_any_node_says_so() -> None:
    decision = decide(jobs(job("huge", gpus=0, cpu=8)), Snapshot(nodes=(node("n", cpu=2),)))
    assert decision.waiting[0].reason == (
        "can never start here: cpu_limit 8 is more than any node has: at most 2 cores"
    )


def test_a_job_only_a_cordoned_node_could_hold_waits_for_it() -> None:
    nodes = (node("n", cpu=2), node("big", cpu=8, schedulable=False))
    decision = decide(jobs(job("huge", gpus=0, cpu=8)), Snapshot(nodes=nodes))
    assert decision.waiting[0].reason == (
        "needs 8 CPU cores but the largest available node has 2; larger ones are cordoned or not ready"
    )


def test_memory_is_held_like_cpu() -> None:
    snapshot = Snapshot(nodes=(node("n", memory=16 * GI),), running=(running("r", "n", memory=12 * GI),))
    decision = decide(jobs(job("big", gpus=0, memory=8 * GI), job("small", gpus=0, memory=4 * GI)), snapshot)
    assert list(admitted(decision)) == ["small"]
    assert reasons(decision)["big"] == "waiting for memory: needs 8 GiB, at most 4 GiB free on one node"


def test_a_node_of_unknown_memory_is_not_limited_by_it() -> None:
    snapshot = Snapshot(nodes=(node("n", "t4"),), running=(running("r", "n", memory=512 * GI),))
    assert admitted(decide(jobs(job("a", memory=64 * GI)), snapshot)) == {"a": "n"}


def test_gpus_of_one_family_but_two_sizes_never_make_one_job() -> None:
    nodes = (node("n", "a100", "a100-80gb"),)
    decision = decide(
        jobs(job("pair", gpus=2, gpu_type="a100"), job("one", gpu_type="a100")), Snapshot(nodes=nodes)
    )
    assert admitted(decision) == {"one": "n"}
    assert reasons(decision)["pair"].startswith(
        "can never start here: gpu_count 2 is more than any node has: at most 1 a100 on one node"
    )


# --- priorities and aging ------------------------------------------------------------------------


def test_higher_priority_goes_first_whatever_the_submission_order() -> None:
    decision = decide(
        jobs(job("low", priority=0), job("high", priority=2), job("normal", priority=1)),
        Snapshot(nodes=(node("n", "t4"),)),
    )
    assert list(admitted(decision)) == ["high"]
    assert [(w.job_id, w.position) for w in decision.waiting] == [("normal", 1), ("low", 2)]


def test_aging_lifts_a_long_waiting_job() -> None:
    snapshot = Snapshot(nodes=(node("n", "t4"),), now=10 * HOUR)
    old_low = job("old-low", priority=0, at=0.0)  # waited 10 h: 10 steps of aging
    new_high = job("new-high", priority=2, at=10 * HOUR)
    decision = decide(jobs(new_high, old_low), snapshot, PolicyConfig(aging_interval_seconds=HOUR))
    assert list(admitted(decision)) == ["old-low"]


# --- quotas ---------------------------------------------------------------------------------------------


def test_a_user_at_their_gpu_quota_waits_and_says_why() -> None:
    one = Quota(max_gpus=1)
    snapshot = Snapshot(nodes=(node("n", "t4", "t4"),), running=(running("r", "n", "0", user="alice"),))
    decision = decide(jobs(job("a", user="alice", quota=one), job("b", user="bob")), snapshot)
    assert admitted(decision) == {"b": "n"}
    assert reasons(decision)["a"] == "quota: alice uses 1 of 1 GPUs"


def test_per_type_and_running_job_quotas() -> None:
    quota = Quota(max_gpus_per_type={"a100": 1}, max_running_jobs=2)
    nodes = (node("n", "a100", "a100", "t4", "t4"),)
    decision = decide(
        jobs(
            job("a1", gpu_type="a100", quota=quota),
            job("a2", gpu_type="a100", quota=quota),
            job("t1", gpu_type="t4", quota=quota),
            job("t2", gpu_type="t4", quota=quota),
        ),
        Snapshot(nodes=nodes),
    )
    assert set(admitted(decision)) == {"a1", "t1"}
    assert reasons(decision)["a2"] == "quota: u uses 1 of 1 a100 GPUs"
    assert reasons(decision)["t2"] == "quota: u runs 2 of 2 jobs"


def test_allowed_types_limit_what_any_may_take() -> None:
    quota = Quota(allowed_gpu_types=("t4",))
    decision = decide(jobs(job("a", gpu_type="any", quota=quota)), Snapshot(nodes=(node("n", "a100", "t4"),)))
    assert [a.gpus for a in decision.admissions] == [("1",)]


# --- fair share -------------------------------------------------------------------------------------


def test_less_recent_usage_goes_first_among_equals() -> None:
    snapshot = Snapshot(
        nodes=(node("n", "t4"),), user_usage={"heavy": 10 * HOUR, "light": HOUR}, group_usage={"g": 11 * HOUR}
    )
    decision = decide(jobs(job("h", user="heavy"), job("l", user="light")), snapshot)
    assert list(admitted(decision)) == ["l"]


def test_group_shares_weight_usage() -> None:
    config = PolicyConfig(group_shares={"big": 4, "small": 1})
    snapshot = Snapshot(nodes=(node("n", "t4"),), group_usage={"big": 3 * HOUR, "small": 1 * HOUR})
    decision = decide(
        jobs(job("s", user="s", group="small"), job("b", user="b", group="big")), snapshot, config
    )
    assert list(admitted(decision)) == ["b"]  # 3/4 < 1/1


def test_usage_is_charged_within_a_cycle() -> None:
    nodes = (node("n", "t4", "t4", "t4", "t4"),)
    queue = jobs(
        *[job(f"a{i}", user="alice", limit=HOUR) for i in range(4)], job("b0", user="bob", limit=HOUR)
    )
    decision = decide(queue, Snapshot(nodes=nodes))
    assert "b0" in admitted(decision)  # alice's burst does not shut bob out


# --- backfill and reservations --------------------------------------------------------------------


def test_a_small_job_backfills_only_if_it_ends_before_the_reservation() -> None:
    nodes = (node("n", "a100", "a100"),)
    snapshot = Snapshot(nodes=nodes, running=(running("r", "n", "0", ends_at=2 * HOUR),), now=0.0)
    big = job("big", gpus=2, priority=2, limit=HOUR)
    short = job("short", priority=1, limit=HOUR)  # ends at 1 h, before the big job's reservation at 2 h
    long = job("long", priority=1, limit=3 * HOUR)
    decision = decide(jobs(big, long, short), snapshot)
    assert admitted(decision) == {"short": "n"}
    assert reasons(decision)["long"] == "waiting behind your job big, which has a reservation on n"
    assert reasons(decision)["big"] == "no free GPU: 1 of 2 free, 2 needed"


def test_a_backfill_must_fit_the_nodes_free_cores_too() -> None:
    # The short job would end before the big job's reservation, but the node's free cores are too few.
    nodes = (node("n", "a100", "a100", cpu=8),)
    snapshot = Snapshot(nodes=nodes, running=(running("r", "n", "0", cpu=6, ends_at=2 * HOUR),), now=0.0)
    big = job("big", gpus=2, priority=2, limit=HOUR)
    fits = job("fits", priority=1, limit=HOUR, cpu=2)
    too_big = job("too-big", priority=1, limit=HOUR, cpu=2.5)
    assert admitted(decide(jobs(big, too_big), snapshot)) == {}
    assert admitted(decide(jobs(big, fits), snapshot)) == {"fits": "n"}


def test_a_job_waiting_behind_another_users_reservation_is_not_told_its_id() -> None:
    nodes = (node("n", "a100", "a100"),)
    snapshot = Snapshot(nodes=nodes, running=(running("r", "n", "0", ends_at=2 * HOUR),), now=0.0)
    big = job("big", gpus=2, priority=2, limit=HOUR, user="carol")
    long = job("long", priority=1, limit=3 * HOUR, user="erin")
    decision = decide(jobs(big, long), snapshot)
    assert reasons(decision)["long"] == "waiting behind another user's job, which has a reservation on n"


def test_a_job_the_shrunk_cluster_can_never_hold_neither_reserves_nor_blocks() -> None:
    # Accepted when a 96-core node existed; now the biggest has 64 cores.
    snapshot = Snapshot(nodes=(node("n", "t4", "t4"),), running=(running("r", "n", "0", ends_at=HOUR),))
    impossible = job("huge", gpus=1, cpu=96, user="alice", priority=2)
    later = job("later", gpus=1, user="bob", limit=10 * HOUR)  # ends after any reservation would start
    decision = decide(jobs(impossible, later), snapshot)
    assert admitted(decision) == {"later": "n"}
    assert reasons(decision)["huge"] == (
        "can never start here: cpu_limit 96 is more than any node has: at most 64 cores"
    )


def test_many_impossible_jobs_do_not_hold_back_the_one_that_fits() -> None:
    queue = jobs(
        *[job(f"x{i}", gpus=4, gpu_type="t4", priority=2) for i in range(500)], job("fits", gpu_type="t4")
    )
    decision = decide(queue, Snapshot(nodes=(node("n", "t4", "t4"),)))
    assert admitted(decision) == {"fits": "n"}
    assert {w.reason for w in decision.waiting} == {
        "can never start here: gpu_count 4 is more than any node has: at most 2 t4 on one node"
    }


def test_a_reservation_counts_gpus_of_one_exact_type() -> None:
    # "mixed" has two a100-family GPUs free, but of two sizes: the pair can only ever run on "busy".
    nodes = (node("mixed", "a100", "a100-80gb"), node("busy", "a100", "a100"))
    snapshot = Snapshot(nodes=nodes, running=(running("r", "busy", "0", "1", ends_at=HOUR),))
    pair = job("pair", gpus=2, gpu_type="a100", priority=2)
    other = job("other", gpu_type="a100", user="bob", limit=10 * HOUR)  # would end after 1 h
    decision = decide(jobs(pair, other), snapshot)
    assert admitted(decision) == {"other": "mixed"}
    assert (
        reasons(decision)["pair"] == "needs 2 free a100s on one node; 2 of 4 are free, at most 1 on one node"
    )


def test_a_reservation_goes_to_a_node_that_can_hold_the_whole_job() -> None:
    nodes = (node("few-cores", "t4", "t4", cpu=4), node("many-cores", "t4", "t4", cpu=64))
    snapshot = Snapshot(nodes=nodes, running=(running("r", "many-cores", "0", ends_at=HOUR),))
    big = job("big", gpus=2, gpu_type="t4", cpu=32, priority=2)
    small = job("small", gpu_type="t4", user="bob", limit=10 * HOUR)
    decision = decide(jobs(big, small), snapshot)
    assert admitted(decision) == {"small": "few-cores"}


def test_jobs_on_other_nodes_are_not_held_back_by_a_reservation() -> None:
    nodes = (node("busy", "a100", "a100"), node("other", "t4"))
    snapshot = Snapshot(nodes=nodes, running=(running("r", "busy", "0", ends_at=HOUR),))
    decision = decide(
        jobs(job("big", gpus=2, gpu_type="a100"), job("t", gpu_type="t4", limit=10 * HOUR)), snapshot
    )
    assert admitted(decision) == {"t": "other"}


# --- node pools -------------------------------------------------------------------------------------


def test_jobs_for_a_declared_pool_are_admitted_up_to_its_capacity() -> None:
    config = PolicyConfig(pools=(Pool("a100", gpus_per_node=8, max_nodes=1),))
    queue = jobs(
        job("p1", gpus=4, gpu_type="a100"),
        job("p2", gpus=4, gpu_type="a100"),
        job("p3", gpus=1, gpu_type="a100"),
    )
    decision = decide(queue, Snapshot(nodes=(node("cpu-only"),)), config)
    assert [(a.job_id, a.pool) for a in decision.admissions] == [("p1", "a100"), ("p2", "a100")]
    assert reasons(decision)["p3"] == (
        "the a100 node pool is at its declared size (8 GPUs, 0 not yet claimed); "
        "waiting for running jobs to end"
    )


def test_a_job_bigger_than_a_pools_nodes_can_never_start() -> None:
    config = PolicyConfig(pools=(Pool("a100", gpus_per_node=8, max_nodes=4),))
    decision = decide(jobs(job("p", gpus=16, gpu_type="a100")), Snapshot(nodes=(node("cpu-only"),)), config)
    assert not decision.admissions
    assert reasons(decision)["p"] == (
        "can never start here: gpu_count 16 is more than any node has: at most 8 a100 on one node"
    )


def test_pool_admissions_count_as_used_capacity() -> None:
    config = PolicyConfig(pools=(Pool("t4", gpus_per_node=1, max_nodes=2),))
    earlier = Running("p0", "u", None, (), gpu_count=1, pool="t4")
    decision = decide(
        jobs(job("a", gpu_type="t4"), job("b", gpu_type="t4")), Snapshot(nodes=(), running=(earlier,)), config
    )
    assert [a.job_id for a in decision.admissions] == ["a"]


def test_a_pool_offers_only_the_types_a_user_may_use() -> None:
    config = PolicyConfig(pools=(Pool("a100", gpus_per_node=8, max_nodes=1),))
    students = Quota(allowed_gpu_types=("t4",))
    decision = decide(
        jobs(job("any", gpu_type="any", quota=students)), Snapshot(nodes=(node("cpu-only"),)), config
    )
    assert decision.admissions == ()  # the a100 pool could grow, but not for this user
    allowed = decide(jobs(job("any", gpu_type="any")), Snapshot(nodes=(node("cpu-only"),)), config)
    assert [(a.job_id, a.pool) for a in allowed.admissions] == [("any", "a100")]

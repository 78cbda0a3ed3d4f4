"""The admission policy, with readable builders; no I/O anywhere."""

from gpujobs.inventory import Device, Node
from gpujobs.scheduler.policy import Request, Snapshot, decide


def node(name: str, *types: str, cpu: float = 64, ready: bool = True, schedulable: bool = True) -> Node:
    devices = tuple(Device(index=str(i), gpu_type=t, product=t.upper()) for i, t in enumerate(types))
    return Node(name=name, devices=devices, cpu_cores=cpu, ready=ready, schedulable=schedulable)


def job(job_id: str, gpus: int = 1, gpu_type: str = "any", cpu: float = 0) -> Request:
    return Request(job_id=job_id, gpu_count=gpus, gpu_type=gpu_type, cpu=cpu)


def test_jobs_are_admitted_in_order_while_gpus_last() -> None:
    decision = decide([job("a"), job("b"), job("c")], Snapshot(nodes=(node("n1", "t4", "t4"),)))
    assert [(a.job_id, a.gpus) for a in decision.admissions] == [("a", ("0",)), ("b", ("1",))]
    assert [(w.job_id, w.position) for w in decision.waiting] == [("c", 1)]
    assert decision.waiting[0].reason == "no free GPU: 0 of 2 free, 1 needed"


def test_held_gpus_are_never_given_twice() -> None:
    snapshot = Snapshot(nodes=(node("n1", "a100", "a100"),), held_gpus={"n1": frozenset({"0"})})
    decision = decide([job("a", gpu_type="a100"), job("b", gpu_type="a100")], snapshot)
    assert [(a.job_id, a.gpus) for a in decision.admissions] == [("a", ("1",))]
    assert decision.waiting[0].reason == "no free a100: 0 of 2 free, 1 needed"


def test_type_routing_and_family_match() -> None:
    nodes = (node("small", "t4"), node("big", "a100-80gb", "a100-80gb"))
    decision = decide(
        [job("fam", gpu_type="a100"), job("exact", gpu_type="a100-80gb"), job("t", gpu_type="t4")],
        Snapshot(nodes=nodes),
    )
    placed = {a.job_id: a.node for a in decision.admissions}
    assert placed == {"fam": "big", "exact": "big", "t": "small"}


def test_multi_gpu_jobs_need_them_on_one_node() -> None:
    nodes = (node("n1", "t4"), node("n2", "t4"))
    decision = decide([job("pair", gpus=2)], Snapshot(nodes=nodes))
    assert not decision.admissions
    assert "on one node" in decision.waiting[0].reason


def test_tightest_fit_keeps_big_blocks_whole() -> None:
    nodes = (node("four", "t4", "t4", "t4", "t4"), node("one", "t4"))
    decision = decide([job("small"), job("big", gpus=4)], Snapshot(nodes=nodes))
    assert {a.job_id: a.node for a in decision.admissions} == {"small": "one", "big": "four"}


def test_cordoned_and_not_ready_nodes_offer_nothing() -> None:
    nodes = (node("cordoned", "t4", schedulable=False), node("down", "t4", ready=False))
    decision = decide([job("a", gpu_type="t4")], Snapshot(nodes=nodes))
    assert "cordoned or not ready" in decision.waiting[0].reason


def test_unknown_type_says_so() -> None:
    decision = decide([job("a", gpu_type="h100")], Snapshot(nodes=(node("n", "t4"),)))
    assert decision.waiting[0].reason == "no h100 in the inventory"


def test_cpu_reservations_are_respected() -> None:
    snapshot = Snapshot(nodes=(node("n", cpu=2),), held_cpu={"n": 1.5})
    decision = decide([job("cpu-job", gpus=0, cpu=1), job("tiny", gpus=0, cpu=0.5)], snapshot)
    assert [a.job_id for a in decision.admissions] == ["tiny"]
    assert decision.waiting[0].reason == "waiting for CPU: needs 1 cores, at most 0.5 free on one node"


def test_a_job_bigger_than_any_node_says_so() -> None:
    decision = decide([job("huge", gpus=0, cpu=8)], Snapshot(nodes=(node("n", cpu=2),)))
    assert decision.waiting[0].reason == "needs 8 CPU cores but the largest node has 2"

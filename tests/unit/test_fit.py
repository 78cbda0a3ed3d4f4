"""One definition of "fits", shared by the submit check and the scheduler policy."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path

import pytest

import builders
from gpujobs.admission import check_spec
from gpujobs.config import Settings
from gpujobs.errors import InvalidSpec
from gpujobs.fit import Shape, never_fits, node_fits, why_never_fits
from gpujobs.inventory import Inventory, Node
from gpujobs.models import JobSpec
from gpujobs.scheduler.policy import Request, Snapshot, decide

GI = builders.GI
# Nodes here have 16 cores unless a test says otherwise.
node = functools.partial(builders.node, cpu=16)


# --- one node ---------------------------------------------------------------------------------------


def test_a_jobs_gpus_must_be_of_one_exact_type() -> None:
    mixed = node("n", "a100", "a100-80gb")
    assert node_fits(mixed, Shape("a100", 1))
    assert not node_fits(mixed, Shape("a100", 2))  # two of the family, but not two alike
    assert node_fits(node("m", "a100-80gb", "a100-80gb"), Shape("a100", 2))
    assert node_fits(mixed, Shape("any", 1)) and not node_fits(mixed, Shape("any", 2))


def test_allowed_types_limit_which_devices_count() -> None:
    mixed = node("n", "a100", "t4", "t4")
    assert node_fits(mixed, Shape("any", 2))
    assert not node_fits(mixed, Shape("any", 2, allowed_types=("a100",)))


def test_cpu_and_memory_up_to_the_nodes_size_fit() -> None:
    n = node("n", cpu=4, memory=16 * GI)
    assert node_fits(n, Shape(cpu=4, memory=16 * GI))
    assert not node_fits(n, Shape(cpu=4.001))
    assert not node_fits(n, Shape(memory=16 * GI + 1))


def test_a_node_of_unknown_memory_is_not_limited_by_it() -> None:
    assert node_fits(node("n", memory=0), Shape(memory=1024 * GI))


# --- no node at all: what to change ---------------------------------------------------------------


def test_too_many_cores_names_the_largest_node() -> None:
    nodes = [node("small", cpu=1), node("big", cpu=2)]
    assert never_fits(nodes, Shape(cpu=1000)) == "cpu_limit 1000 is more than any node has: at most 2 cores"
    assert never_fits(nodes, Shape(cpu=2)) is None


def test_too_much_memory_names_the_largest_node() -> None:
    nodes = [node("n", memory=23.4 * GI), node("m", memory=8 * GI)]
    misfit = why_never_fits(nodes, Shape(memory=64 * GI))
    assert misfit is not None and misfit.field == "memory_limit"
    assert misfit.message == "memory_limit 64Gi is more than any node has: at most 23.4 GiB"


def test_memory_is_not_refused_while_some_node_has_unknown_memory() -> None:
    assert never_fits([node("n", memory=8 * GI), node("unknown")], Shape(memory=64 * GI)) is None


def test_too_many_gpus_names_the_most_on_one_node() -> None:
    nodes = [node("a", "t4", "t4"), node("b", "t4")]
    misfit = why_never_fits(nodes, Shape("t4", 3))
    assert misfit is not None and misfit.field == "gpu_count"
    assert misfit.message == "gpu_count 3 is more than any node has: at most 2 t4 on one node"
    assert never_fits(nodes, Shape("t4", 2)) is None


def test_gpus_of_a_family_spread_over_sizes_are_explained() -> None:
    message = never_fits([node("n", "a100", "a100-80gb")], Shape("a100", 2))
    assert message == (
        "gpu_count 2 is more than any node has: at most 1 a100 on one node "
        "(a job's GPUs are all of one type; n has 1 a100, 1 a100-80gb)"
    )


def test_a_type_no_node_has() -> None:
    misfit = why_never_fits([node("n", "t4")], Shape("h100", 1))
    assert misfit is not None and (misfit.field, misfit.message) == ("gpu_type", "no node has h100 GPUs")
    assert never_fits([node("n", "a100")], Shape("any", 1, allowed_types=("t4",))) == (
        "no node has GPUs of a type you may use (your allowed types: t4)"
    )


def test_parts_that_fit_apart_but_not_together() -> None:
    nodes = [
        node("n1", *["a100"] * 8, cpu=16, memory=512 * GI),
        node("n2", "a100", cpu=64, memory=16 * GI),
    ]
    misfit = why_never_fits(nodes, Shape("a100", 8, cpu=32, memory=64 * GI))
    assert misfit is not None and misfit.field == "gpu_count"
    assert misfit.message == (
        "no node has 8 a100 GPUs together with 32 CPU cores and 64Gi memory; "
        "the largest a100 node, n1, has 8 GPUs, 16 cores, 512 GiB"
    )


def test_cpu_and_memory_that_fit_apart_but_not_together() -> None:
    nodes = [node("many-cores", cpu=64, memory=8 * GI), node("much-memory", cpu=4, memory=256 * GI)]
    misfit = why_never_fits(nodes, Shape(cpu=32, memory=64 * GI))
    assert misfit is not None and misfit.field == "cpu_limit"
    assert misfit.message == (
        "no node has 32 CPU cores together with 64Gi memory; "
        "the largest node, many-cores, has 64 cores, 8 GiB"
    )


def test_cordoned_and_not_ready_nodes_may_come_back_so_they_count() -> None:
    nodes = [
        node("small", "t4", cpu=2),
        node("cordoned", "t4", "t4", cpu=64, schedulable=False),
        node("down", cpu=128, ready=False),
    ]
    assert never_fits(nodes, Shape("t4", 2, cpu=32)) is None
    assert never_fits(nodes, Shape(cpu=128)) is None


def test_a_node_pool_makes_a_gpu_shape_possible() -> None:
    nodes = [node("cpu-only", cpu=4)]
    pools = [("a100", 8)]
    assert never_fits(nodes, Shape("a100", 8, cpu=96), pools) is None  # a pool's CPU is unknown
    assert never_fits(nodes, Shape("a100", 9), pools) == (
        "gpu_count 9 is more than any node has: at most 8 a100 on one node"
    )
    assert never_fits(nodes, Shape("any", 1, allowed_types=("t4",)), pools) is not None
    assert never_fits(nodes, Shape(cpu=8), pools) is not None  # pools add GPU nodes, for GPU jobs


def test_an_inventory_not_yet_listed_refuses_nothing() -> None:
    assert never_fits([], Shape(cpu=1000)) is None
    assert never_fits([], Shape("t4", 64)) is None


def test_the_inventory_counts_one_type_per_job() -> None:
    inventory = Inventory(
        nodes=(node("n", "a100", "a100-80gb"), node("m", "t4", "t4", "t4")),
        source="simulated",
        updated_at=datetime.now(timezone.utc),
    )
    assert inventory.most_on_one_node("a100") == 1
    assert inventory.most_on_one_node("any") == 3


# --- the submit check and the policy agree -------------------------------------------------------------


SHAPES = [
    {"gpu_count": 2, "gpu_type": "a100"},  # one a100 and one a100-80gb: two of the family, not alike
    {"gpu_count": 1, "gpu_type": "a100"},
    {"gpu_count": 2, "gpu_type": "t4"},
    {"gpu_count": 3, "gpu_type": "t4"},
    {"gpu_count": 2, "gpu_type": "t4", "cpu_limit": "8"},
    {"gpu_count": 2, "gpu_type": "t4", "cpu_limit": "9"},
    {"cpu_limit": "32"},
    {"cpu_limit": "33"},
    {"memory_limit": "64Gi"},
    {"memory_limit": "65Gi"},
    {"gpu_count": 1, "gpu_type": "a100", "cpu_limit": "32"},
]


@pytest.mark.parametrize("fields", SHAPES, ids=[str(s) for s in SHAPES])
def test_a_job_refused_at_submit_is_one_the_policy_could_never_place(tmp_path: Path, fields: dict) -> None:
    nodes = (
        node("mixed", "a100", "a100-80gb", cpu=16, memory=64 * GI),
        node("t4s", "t4", "t4", cpu=8, memory=32 * GI),
        node("cpu", cpu=32, memory=16 * GI, schedulable=False),
    )
    inventory = Inventory(nodes=nodes, source="simulated", updated_at=datetime.now(timezone.utc))
    settings = Settings(home_template=str(tmp_path / "{username}"), data_dir=tmp_path / "data")
    spec = JobSpec.model_validate({"script": "print(1)", **fields})
    try:
        checked = check_spec(spec, settings=settings, username="alice", inventory=inventory)
    except InvalidSpec:
        checked = None
    request = Request(
        job_id="j",
        gpu_count=spec.gpus_wanted,
        gpu_type=checked.gpu_type if checked else spec.gpu_type,
        cpu=float(fields.get("cpu_limit", 0)),
        memory=float(int(fields["memory_limit"].removesuffix("Gi")) * GI) if "memory_limit" in fields else 0,
    )
    # Every node back in service and empty: what the policy could ever do with it.
    all_up = tuple(Node(n.name, n.devices, n.cpu_cores, n.memory_bytes) for n in nodes)
    ever = decide([request], Snapshot(nodes=all_up))
    now = decide([request], Snapshot(nodes=nodes))
    assert bool(ever.admissions) == (checked is not None)
    if checked is None:
        assert now.waiting[0].reason.startswith("can never start here: ")
    else:
        assert not now.waiting or not now.waiting[0].reason.startswith("can never start here")

import os
from pathlib import Path

import pytest

import builders
from gpujobs.admission import check_spec
from gpujobs.config import Settings
from gpujobs.errors import InvalidSpec, PayloadTooLarge
from gpujobs.inventory import Inventory, Node
from gpujobs.models import JobSpec
from gpujobs.quotas import QuotaRule


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "home" / "alice" / "work").mkdir(parents=True)
    (tmp_path / "home" / "alice" / "train.py").write_text("print(1)")
    (tmp_path / "home" / "bob").mkdir(parents=True)
    (tmp_path / "home" / "bob" / "secret.py").write_text("print(2)")
    (tmp_path / "shared" / "examples").mkdir(parents=True)
    (tmp_path / "shared" / "examples" / "ml.py").write_text("print(3)")
    (tmp_path / "outside.py").write_text("print(4)")
    return Settings(
        home_template=str(tmp_path / "home" / "{username}"),
        shared_roots=[str(tmp_path / "shared")],
        data_dir=tmp_path / "data",
    )


INVENTORY = builders.inventory(builders.node("n", "a100-80gb", "a100-80gb", "t4", cpu=0))


def check(settings: Settings, **fields) -> JobSpec:
    return check_spec(
        JobSpec.model_validate(fields), settings=settings, username="alice", inventory=INVENTORY
    )


def refused(settings: Settings, **fields) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        check(settings, **fields)
    return caught.value


def test_relative_paths_resolve_in_the_home(settings: Settings, tmp_path: Path) -> None:
    assert check(settings, script_path="train.py").script_path == str(
        tmp_path / "home" / "alice" / "train.py"
    )


def test_shared_roots_are_allowed(settings: Settings, tmp_path: Path) -> None:
    path = str(tmp_path / "shared" / "examples" / "ml.py")
    assert check(settings, script_path=path).script_path == path


def test_dot_dot_is_refused(settings: Settings) -> None:
    error = refused(settings, script_path="../bob/secret.py")
    assert error.field == "script_path" and "'..'" in error.message


def test_another_users_home_and_elsewhere_are_refused(settings: Settings, tmp_path: Path) -> None:
    assert (
        "outside your allowed folders"
        in refused(settings, script_path=str(tmp_path / "home/bob/secret.py")).message
    )
    assert (
        "outside your allowed folders" in refused(settings, script_path=str(tmp_path / "outside.py")).message
    )
    assert "outside your allowed folders" in refused(settings, script_path="/etc/passwd").message


def test_a_symlink_escape_is_refused(settings: Settings, tmp_path: Path) -> None:
    os.symlink(tmp_path / "home" / "bob" / "secret.py", tmp_path / "home" / "alice" / "link.py")
    assert "outside your allowed folders" in refused(settings, script_path="link.py").message


def test_missing_files_and_folders(settings: Settings) -> None:
    assert "no such file" in refused(settings, script_path="nope.py").message
    assert refused(settings, script="x", working_dir="nope").field == "working_dir"
    assert check(settings, script="x", working_dir="work").working_dir.endswith("alice/work")


def test_gpu_types_are_normalised_and_unknown_ones_listed(settings: Settings) -> None:
    assert check(settings, script="x", gpu_count=1, gpu_type="NVIDIA-A100-SXM4-80GB").gpu_type == "a100-80gb"
    assert check(settings, script="x", gpu_count=1, gpu_type="A100").gpu_type == "a100"
    error = refused(settings, script="x", gpu_count=1, gpu_type="h100")
    assert error.field == "gpu_type"
    assert "known types: a100, a100-80gb, any, t4" in error.message


def test_gpu_count_beyond_any_node(settings: Settings) -> None:
    error = refused(settings, script="x", gpu_count=2, gpu_type="t4")
    assert error.field == "gpu_count" and "at most 1 t4 on one node" in error.message


def test_images_must_be_allowed(settings: Settings) -> None:
    assert refused(settings, script="x", image="evil:latest").field == "image"
    assert check(settings, script="x", image="gpujobs-runtime:cpu").image == "gpujobs-runtime:cpu"


def test_oversized_inline_script(settings: Settings) -> None:
    with pytest.raises(PayloadTooLarge):
        check(settings, script="#" * (settings.max_inline_script_bytes + 1))


def test_on_kubernetes_paths_are_checked_as_written(settings: Settings) -> None:
    kube = settings.model_copy(update={"executor": "kubernetes", "home_template": "/home/{username}"})
    spec = check_spec(
        JobSpec.model_validate({"script_path": "train.py"}),
        settings=kube,
        username="alice",
        inventory=INVENTORY,
    )
    assert spec.script_path == "/home/alice/train.py"  # the user's volume, as the pod mounts it
    with pytest.raises(InvalidSpec, match="outside your allowed folders"):
        check_spec(
            JobSpec.model_validate({"script_path": "/etc/passwd"}),
            settings=kube,
            username="alice",
            inventory=INVENTORY,
        )


# --- jobs no node could ever hold are refused at submit -----------------------------------------------


inventory_of = builders.inventory


def gpu_node(name: str, *types: str, cpu: float = 8, memory: float = 0, **state: bool) -> Node:
    return builders.node(name, *types, cpu=cpu, memory=memory, **state)


def refused_on(inventory: Inventory, settings: Settings, rule=None, **fields) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        checked_on(inventory, settings, rule=rule, **fields)
    return caught.value


def checked_on(inventory: Inventory, settings: Settings, pools=(), rule=None, **fields) -> JobSpec:
    spec = JobSpec.model_validate({"script": "print(1)", **fields})
    return check_spec(spec, settings=settings, username="alice", inventory=inventory, pools=pools, rule=rule)


def test_gpus_of_one_family_but_two_sizes_are_not_one_jobs(settings: Settings) -> None:
    mixed = inventory_of(gpu_node("n", "a100", "a100-80gb"))
    error = refused_on(mixed, settings, gpu_count=2, gpu_type="a100")
    assert error.field == "gpu_count"
    assert "at most 1 a100 on one node" in error.message and "all of one type" in error.message
    assert checked_on(mixed, settings, gpu_count=1, gpu_type="a100").gpu_count == 1


def test_a_cpu_only_job_bigger_than_every_node_is_refused(settings: Settings) -> None:
    vm = inventory_of(gpu_node("vm", cpu=2))
    error = refused_on(vm, settings, cpu_limit="1000")
    assert (error.field, error.message) == (
        "cpu_limit",
        "cpu_limit 1000 is more than any node has: at most 2 cores",
    )


def test_cores_and_gpus_up_to_the_biggest_node_are_accepted_one_more_is_not(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("a", "t4", "t4", cpu=4), gpu_node("b", "t4", cpu=16))
    assert checked_on(cluster, settings, cpu_limit="16").cpu_limit == "16"
    assert refused_on(cluster, settings, cpu_limit="17").field == "cpu_limit"
    assert checked_on(cluster, settings, gpu_count=2, gpu_type="t4").gpu_count == 2
    assert refused_on(cluster, settings, gpu_count=3, gpu_type="t4").message == (
        "gpu_count 3 is more than any node has: at most 2 t4 on one node"
    )


def test_memory_beyond_every_node_is_refused(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("n", memory=23.4 * 2**30), gpu_node("m", memory=8 * 2**30))
    error = refused_on(cluster, settings, memory_limit="64Gi")
    assert (error.field, error.message) == (
        "memory_limit",
        "memory_limit 64Gi is more than any node has: at most 23.4 GiB",
    )
    assert checked_on(cluster, settings, memory_limit="16Gi").memory_limit == "16Gi"


def test_parts_no_single_node_holds_together_are_refused(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("gpus", "t4", "t4", cpu=4), gpu_node("cores", cpu=64))
    error = refused_on(cluster, settings, gpu_count=2, gpu_type="t4", cpu_limit="32")
    assert error.field == "gpu_count"
    assert error.message == (
        "no node has 2 t4 GPUs together with 32 CPU cores; the largest t4 node, gpus, has 2 GPUs, 4 cores"
    )


def test_a_cordoned_node_still_counts_it_may_come_back(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("small", cpu=2), gpu_node("big", cpu=64, schedulable=False, ready=False))
    assert checked_on(cluster, settings, cpu_limit="64").cpu_limit == "64"


def test_a_node_pool_holds_what_no_node_has_yet(settings: Settings) -> None:
    no_gpus = inventory_of(gpu_node("cpu-only", cpu=4))
    pools = [("a100", 8)]
    assert (
        checked_on(no_gpus, settings, pools=pools, gpu_count=8, gpu_type="a100", cpu_limit="32").gpu_count
        == 8
    )
    with pytest.raises(InvalidSpec, match="at most 8 a100 on one node"):
        checked_on(no_gpus, settings, pools=pools, gpu_count=9, gpu_type="a100")


def test_quota_limits_still_speak_of_the_quota(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("n", *["t4"] * 4))
    with pytest.raises(InvalidSpec, match="more than your quota of 2 GPUs"):
        checked_on(cluster, settings, rule=QuotaRule(max_gpus=2), gpu_count=3, gpu_type="t4")


def test_any_gpu_is_refused_when_no_node_has_a_type_you_may_use(settings: Settings) -> None:
    cluster = inventory_of(gpu_node("n", "t4"))
    error = refused_on(cluster, settings, rule=QuotaRule(allowed_gpu_types=["a100"]), gpu_count=1)
    assert (error.field, error.message) == (
        "gpu_type",
        "no node has GPUs of a type you may use (your allowed types: a100)",
    )

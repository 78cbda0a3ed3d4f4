import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gpujobs.admission import check_spec
from gpujobs.config import Settings
from gpujobs.errors import InvalidSpec, PayloadTooLarge
from gpujobs.inventory import Device, Inventory, Node
from gpujobs.models import JobSpec


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


INVENTORY = Inventory(
    nodes=(
        Node(
            "n",
            devices=(
                Device("0", "a100-80gb", "A100"),
                Device("1", "a100-80gb", "A100"),
                Device("2", "t4", "T4"),
            ),
        ),
    ),
    source="simulated",
    updated_at=datetime.now(timezone.utc),
)


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

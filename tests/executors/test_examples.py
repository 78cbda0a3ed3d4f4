"""The examples run to completion as jobs on a CPU-only machine (simulated GPUs: CUDA sees none)."""

from __future__ import annotations

import shutil

import pytest

from gpujobs.hub.integration import EXAMPLES
from helpers import Api

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def api(module_world) -> Api:
    shutil.copytree(EXAMPLES, module_world.shared / "examples", dirs_exist_ok=True)
    service = module_world.start("--simulate-gpus", "t4:2")
    return Api(service.client(module_world.hub.add_user("alice")))


def run(api: Api, module_world, name: str, *args: str, gpus: int = 1) -> str:
    job = api.submit_ok(
        script_path=str(module_world.shared / "examples" / name),
        args=list(args),
        gpu_required=True,
        gpu_count=gpus,
        gpu_type="any",
        memory_limit="4Gi",
    )
    done = api.wait_status(job["job_id"], "completed", "failed", timeout=240)
    logs = api.logs(job["job_id"])
    assert done["status"] == "completed", logs
    return logs


def test_gpu_performance_test(api: Api, module_world) -> None:
    logs = run(api, module_world, "gpu_performance_test.py", "--size", "256", "--iterations", "4")
    assert "CPU ONLY (no GPU visible)" in logs and "GFLOP/s" in logs
    assert "simulated GPUs" in logs


def test_ml_training_example(api: Api, module_world) -> None:
    logs = run(api, module_world, "ml_training_example.py", "--steps", "40")
    accuracy = float(logs.split("held-out accuracy ")[1].split()[0])
    assert accuracy > 0.8


def test_distributed_training_example(api: Api, module_world) -> None:
    logs = run(api, module_world, "distributed_training_example.py", "--steps", "10", gpus=2)
    assert "backend gloo" in logs
    assert logs.count("weights in sync = True") == 2

import pytest
from pydantic import ValidationError

import builders
from gpujobs.models import JobSpec, JobStatus

spec = builders.spec


def error_text(**fields) -> str:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(fields)
    return str(caught.value)


def test_terminal_states() -> None:
    assert [s.value for s in JobStatus if s.is_terminal()] == ["completed", "failed", "cancelled"]


def test_the_briefs_example_body_is_a_valid_spec() -> None:
    parsed = JobSpec.model_validate(
        {
            "name": "cnn-training",
            "script_path": "/shared/examples/ml_training_example.py",
            "gpu_required": True,
            "gpu_type": "any",
            "cpu_limit": "4",
            "memory_limit": "8Gi",
        }
    )
    assert parsed.gpus_wanted == 1


def test_gpu_count_implies_gpus_and_zero_means_none() -> None:
    assert spec(gpu_count=2).gpus_wanted == 2
    assert spec().gpus_wanted == 0
    assert "gpu_required is true but gpu_count is 0" in error_text(script="x", gpu_required=True, gpu_count=0)
    assert "gpu_required is false" in error_text(script="x", gpu_required=False, gpu_count=1)


def test_exactly_one_of_script_and_script_path() -> None:
    assert "exactly one" in error_text(script="x", script_path="a.py")
    assert "exactly one" in error_text(name="nothing")


@pytest.mark.parametrize(
    ("requirement", "why"),
    [
        ("numpy; touch x", "PEP 508"),
        ("--index-url https://evil.example/simple", "pip option"),
        ("-e .", "pip option"),
        ("pkg @ https://example.org/pkg.whl", "URL"),
        ("", "empty"),
    ],
)
def test_requirements_must_be_plain_pep508(requirement: str, why: str) -> None:
    assert why in error_text(script="x", requirements=[requirement])


def test_good_requirements_pass() -> None:
    assert spec(
        requirements=["numpy>=1.26", "scipy==1.13.*", "torch[cuda]; python_version>'3.8'"]
    ).requirements


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "PATH",
        "PYTHONPATH",
        "GPUJOBS_JOB_ID",
        "JUPYTERHUB_API_TOKEN",
        # They steer installers, shells and the interpreter.
        "PIP_INDEX_URL",
        "pip_extra_index_url",
        "UV_INDEX_URL",
        "CONDA_PKGS_DIRS",
        "VIRTUAL_ENV",
        "PYTHONINSPECT",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "BASH_ENV",
        "ENV",
        "XDG_CONFIG_HOME",
    ],
)
def test_reserved_environment_names(name: str) -> None:
    assert "reserved" in error_text(script="x", environment={name: "1"})


@pytest.mark.parametrize("name", ["WANDB_PROJECT", "HF_HOME", "OMP_NUM_THREADS", "MY_ENVIRONMENT"])
def test_ordinary_environment_names_pass(name: str) -> None:
    assert spec(environment={name: "1"}).environment == {name: "1"}


@pytest.mark.parametrize("name", ["1ABC", "A-B", "", "A B"])
def test_invalid_environment_names(name: str) -> None:
    assert "not a valid variable name" in error_text(script="x", environment={name: "1"})


def test_quantities_accept_numbers_and_refuse_words() -> None:
    assert spec(cpu_limit=4).cpu_limit == "4"
    assert "not a CPU quantity" in error_text(script="x", cpu_limit="lots")
    assert "not a memory quantity" in error_text(script="x", memory_limit="8 gigs")


def test_unknown_fields_are_refused() -> None:
    assert "Extra inputs" in error_text(script="x", user="mallory")


def test_gpu_count_range() -> None:
    assert "less than or equal to 1024" in error_text(script="x", gpu_count=1025)
    assert "greater than or equal to 0" in error_text(script="x", gpu_count=-1)

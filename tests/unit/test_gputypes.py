import pytest

from gpujobs.gputypes import family_of, normalise_gpu_type, satisfies, snap_memory_gb


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NVIDIA-A100-SXM4-80GB", "a100-80gb"),  # GPU feature discovery
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),  # NVML
        ("Tesla-V100-SXM2-16GB", "v100-16gb"),
        ("Tesla-T4", "t4"),
        ("nvidia-tesla-a100", "a100"),  # GKE
        ("nvidia-a100-80gb", "a100-80gb"),  # GKE
        ("tesla-v100", "v100"),  # the brief's own example
        ("NVIDIA-H100-80GB-HBM3", "h100-80gb"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("nvidia-l4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("any", "any"),
        ("  A100 ", "a100"),
        ("Tesla P100-PCIE-16GB", "p100-16gb"),
    ],
)
def test_product_strings_become_canonical_types(raw: str, expected: str) -> None:
    assert normalise_gpu_type(raw) == expected


def test_measured_memory_adds_the_marketed_size() -> None:
    assert normalise_gpu_type("NVIDIA A100-SXM4", memory_mib=81559) == "a100-80gb"
    assert normalise_gpu_type("NVIDIA H200", memory_mib=143771) == "h200-141gb"
    assert normalise_gpu_type("Tesla T4", memory_mib=15360) == "t4-16gb"
    assert snap_memory_gb(3000) is None


def test_admin_aliases_come_first() -> None:
    assert normalise_gpu_type("Fancy-Accel-9", aliases={"fancy-accel-9": "fa9"}) == "fa9"


def test_unknown_products_keep_a_clean_name() -> None:
    assert normalise_gpu_type("Acme Turbo GPU") == "acme-turbo-gpu"


def test_a_sized_type_serves_its_family_but_not_the_other_way() -> None:
    assert family_of("a100-80gb") == "a100"
    assert satisfies("a100-80gb", "a100")
    assert satisfies("a100-80gb", "any")
    assert not satisfies("a100", "a100-80gb")
    assert not satisfies("a100-40gb", "a100-80gb")
    assert not satisfies("a10g", "a10")

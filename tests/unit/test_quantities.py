import pytest

from gpujobs.quantities import QuantityError, parse_cpu, parse_memory


@pytest.mark.parametrize(("text", "cores"), [("4", 4.0), ("0.5", 0.5), ("500m", 0.5), ("1500m", 1.5)])
def test_cpu(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"), [("8Gi", 8 * 2**30), ("512Mi", 512 * 2**20), ("2G", 2 * 10**9), ("1024", 1024)]
)
def test_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "", "4 cores", "-1", "1e3x", "8GB"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(text)
    with pytest.raises(QuantityError):
        parse_memory(text)

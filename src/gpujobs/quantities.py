"""Kubernetes resource quantities (``4``, ``500m``, ``8Gi``, ``1.5G``), parsed without I/O.

The same strings go into Kubernetes manifests unchanged; the local executor needs their values.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


class QuantityError(ValueError):
    pass


def _split(text: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text.strip())
    if not match:
        raise QuantityError(text)
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise QuantityError(text) from exc
    return number, match.group("suffix") or ""


def parse_cpu(text: str) -> float:
    """CPU cores: ``4`` → 4.0, ``500m`` → 0.5.  Raises QuantityError for anything else."""
    number, suffix = _split(text)
    if suffix == "m":
        return float(number / 1000)
    if suffix:
        raise QuantityError(text)
    return float(number)


def parse_memory(text: str) -> int:
    """Bytes: ``8Gi`` → 8589934592, ``512M`` → 512000000, ``1024`` → 1024."""
    number, suffix = _split(text)
    if suffix == "m":
        raise QuantityError(text)
    factor = _BINARY.get(suffix) or _DECIMAL[suffix]
    return int(number * factor)


def format_bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"

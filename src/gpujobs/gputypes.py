"""One normaliser for GPU types, used by both executors.

What nodes and NVML report is messy: ``NVIDIA-A100-SXM4-80GB`` (GPU feature discovery),
``Tesla-V100-SXM2-16GB``, ``nvidia-tesla-a100`` (GKE), ``NVIDIA A100-SXM4-40GB`` (NVML), or the brief's
own ``tesla-v100``.  Users ask for ``a100`` or ``a100-80gb``.  Canonical types are a *family*
(``a100``) optionally followed by a memory size (``a100-80gb``); a sized type is a subtype of its family,
so a job asking for ``a100`` may run on an ``a100-80gb``.

    >>> normalise_gpu_type("NVIDIA-A100-SXM4-80GB")
    'a100-80gb'
    >>> normalise_gpu_type("nvidia-tesla-a100")
    'a100'
    >>> satisfies("a100-80gb", "a100")
    True
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

ANY = "any"

# Families we recognise in product strings, longest first so that "a100" wins over "a10",
# "l40s" over "l40" and "gh200" over "h200".
KNOWN_FAMILIES: tuple[str, ...] = tuple(
    sorted(
        [
            "a100",
            "a10g",
            "a10",
            "a30",
            "a40",
            "a16",
            "a2",
            "h100",
            "h200",
            "gh200",
            "h800",
            "b200",
            "b100",
            "gb200",
            "l40s",
            "l40",
            "l4",
            "t4",
            "v100",
            "p100",
            "p40",
            "p4",
            "k80",
            "m60",
            "rtx-a6000",
            "rtx-a5000",
            "rtx-a4000",
            "rtx-6000",
            "rtx-4090",
            "rtx-3090",
            "mi300x",
            "mi250x",
            "mi250",
            "mi210",
            "mi100",
        ],
        key=len,
        reverse=True,
    )
)

# Memory sizes (GB, as vendors name them) that products really ship with; a measured size snaps to
# the nearest one within 10 %, because NVML reports 81559 MiB for an "80GB" A100.
_MARKETED_SIZES_GB = (8, 12, 16, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 180, 192)

_VENDOR_WORDS = re.compile(r"\b(nvidia|tesla|amd|instinct|geforce|quadro|pcie|sxm\d?|nvl|hbm\d?e?)\b")
_SIZE_IN_NAME = re.compile(r"(?:^|[\s-])(\d{1,3})\s*gi?b\b")
_CANONICAL = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def snap_memory_gb(memory_mib: float) -> int | None:
    """The marketed size (GB) closest to a measured one, or None when nothing is within 10 %."""
    gib = memory_mib / 1024
    best = min(_MARKETED_SIZES_GB, key=lambda size: abs(size - gib))
    return best if abs(best - gib) <= 0.1 * best else None


def normalise_gpu_type(
    raw: str,
    *,
    memory_mib: float | None = None,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """Turn a product string or label value into a canonical type (``a100-80gb``, ``t4``, ``any``).

    ``memory_mib`` (from NVML or ``nvidia.com/gpu.memory``) adds a size when the name has none.
    ``aliases`` are the admin's own mappings, applied first (keys compared case-insensitively).
    Unknown products keep a cleaned-up form of their name, so nothing is ever lost.
    """
    text = raw.strip().lower()
    if not text:
        return ANY
    if aliases:
        lowered = {key.strip().lower(): value for key, value in aliases.items()}
        if text in lowered:
            return lowered[text]
    if text == ANY:
        return ANY
    text = text.replace("_", "-")
    spaced = re.sub(r"[-\s]+", " ", text)
    size_match = _SIZE_IN_NAME.search(spaced)
    size_gb: int | None = int(size_match.group(1)) if size_match else None
    if size_gb is None and memory_mib:
        size_gb = snap_memory_gb(memory_mib)
    words = _VENDOR_WORDS.sub(" ", spaced)
    compact = re.sub(r"\s+", "-", words.strip())
    family = next((fam for fam in KNOWN_FAMILIES if re.search(rf"(^|-){re.escape(fam)}($|-)", compact)), None)
    if family is None:
        cleaned = _SIZE_IN_NAME.sub("", compact).strip("-")
        family = re.sub(r"[^a-z0-9]+", "-", cleaned).strip("-") or "unknown"
        size_gb = size_gb if size_match else None
    return f"{family}-{size_gb}gb" if size_gb else family


@functools.lru_cache(maxsize=4096)
def family_of(gpu_type: str) -> str:
    """``a100-80gb`` → ``a100``; a type without a size is its own family."""
    match = re.match(r"^(.*)-\d+gb$", gpu_type)
    return match.group(1) if match else gpu_type


@functools.lru_cache(maxsize=16384)
def satisfies(offered: str, requested: str) -> bool:
    """Whether a device of type ``offered`` can serve a request for ``requested``."""
    return requested == ANY or offered == requested or family_of(offered) == requested


def is_canonical(gpu_type: str) -> bool:
    return bool(_CANONICAL.match(gpu_type))


def types_with_families(types: set[str] | frozenset[str] | list[str]) -> set[str]:
    """The types a user may ask for given the types present: each type and its family."""
    known = set(types)
    known.update(family_of(t) for t in types)
    return known

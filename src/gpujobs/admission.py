"""Checks on a job spec that need context: the user's allowed roots, the inventory, the images.

``check_spec`` returns the spec as it will be stored (paths resolved, GPU type canonical) or raises
``InvalidSpec`` naming the field.  It reads the filesystem (to resolve paths) but changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import Settings
from .errors import InvalidSpec, PayloadTooLarge
from .gputypes import ANY, normalise_gpu_type, types_with_families
from .inventory import Inventory
from .models import JobSpec


def allowed_roots(settings: Settings, username: str) -> list[Path]:
    roots = [settings.home_of(username), *(Path(root) for root in settings.shared_roots)]
    return [Path(os.path.realpath(root)) for root in roots]


def resolve_user_path(raw: str, *, field: str, settings: Settings, username: str, want_dir: bool) -> str:
    """The real path of ``raw`` if it lies inside the user's home or a shared root, else InvalidSpec."""
    if "\x00" in raw or not raw.strip():
        raise InvalidSpec(f"{field} is empty or has a NUL byte", field=field)
    candidate = Path(raw)
    if ".." in candidate.parts:
        raise InvalidSpec(f"{field} must not contain '..'", field=field)
    if not candidate.is_absolute():
        candidate = settings.home_of(username) / candidate
    real = Path(os.path.realpath(candidate))
    roots = allowed_roots(settings, username)
    if not any(real == root or root in real.parents for root in roots):
        where = ", ".join(str(root) for root in roots)
        raise InvalidSpec(f"{field} {raw!r} is outside your allowed folders ({where})", field=field)
    if want_dir and not real.is_dir():
        raise InvalidSpec(f"{field} {raw!r} is not a folder", field=field)
    if not want_dir and not real.is_file():
        raise InvalidSpec(f"{field} {raw!r}: no such file", field=field)
    return str(real)


def check_spec(spec: JobSpec, *, settings: Settings, username: str, inventory: Inventory) -> JobSpec:
    updates: dict[str, object] = {}
    if spec.script is not None and len(spec.script.encode()) > settings.max_inline_script_bytes:
        raise PayloadTooLarge(
            f"script is larger than {settings.max_inline_script_bytes} bytes; "
            "save it as a file and use script_path",
            field="script",
        )
    if spec.script_path is not None:
        updates["script_path"] = resolve_user_path(
            spec.script_path, field="script_path", settings=settings, username=username, want_dir=False
        )
    if spec.working_dir is not None:
        updates["working_dir"] = resolve_user_path(
            spec.working_dir, field="working_dir", settings=settings, username=username, want_dir=True
        )
    gpu_type = normalise_gpu_type(spec.gpu_type, aliases=settings.gpu_type_aliases)
    gpus = spec.gpus_wanted
    if gpus:
        known = types_with_families(inventory.gpu_types())
        if gpu_type != ANY and gpu_type not in known:
            listed = ", ".join(sorted(known | {ANY})) if known else "none: this executor has no GPUs"
            raise InvalidSpec(
                f"gpu_type {spec.gpu_type!r} is not available here; known types: {listed}", field="gpu_type"
            )
        most = inventory.most_on_one_node(gpu_type)
        if gpus > most:
            label = "GPU" if gpu_type == ANY else gpu_type
            raise InvalidSpec(
                f"gpu_count {gpus} is more than any node has: at most {most} {label} on one node",
                field="gpu_count",
            )
    updates["gpu_type"] = gpu_type
    updates["gpu_count"] = gpus
    updates["gpu_required"] = gpus > 0
    if spec.image is not None and spec.image not in settings.allowed_images:
        allowed = ", ".join(settings.allowed_images) or "none configured"
        raise InvalidSpec(f"image {spec.image!r} is not allowed; allowed images: {allowed}", field="image")
    return spec.model_copy(update=updates)

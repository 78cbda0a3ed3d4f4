"""Checks on a job spec that need context: the user's allowed roots, the inventory, the images.

``check_spec`` returns the spec as it will be stored (paths resolved, GPU type canonical) or raises
``InvalidSpec`` naming the field.  It reads the filesystem (to resolve paths) but changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .config import Settings
from .errors import Forbidden, InvalidSpec, PayloadTooLarge
from .fit import ClusterSizes, Shape
from .gputypes import ANY, normalise_gpu_type, satisfies, types_with_families
from .inventory import Inventory
from .models import JobSpec
from .quantities import parse_cpu, parse_memory
from .quotas import QuotaRule

MAX_NAME_BYTES = 255  # Linux's NAME_MAX
MAX_PATH_BYTES = 4096  # PATH_MAX


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
    if len(raw.encode()) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_NAME_BYTES for p in candidate.parts):
        raise InvalidSpec(
            f"{field} is too long: at most {MAX_NAME_BYTES} bytes per name and {MAX_PATH_BYTES} in all",
            field=field,
        )
    if not candidate.is_absolute():
        candidate = settings.home_of(username) / candidate
    if settings.executor != "local":
        # The file lives on the user's volume in the cluster, which this service does not mount: the
        # path is checked as written ('..' is refused above) and the job's pod finds the file or fails.
        roots = [settings.home_of(username), *(Path(root) for root in settings.shared_roots)]
        if not any(candidate == root or root in candidate.parents for root in roots):
            where = ", ".join(str(root) for root in roots)
            raise InvalidSpec(f"{field} {raw!r} is outside your allowed folders ({where})", field=field)
        return str(candidate)
    try:
        real = Path(os.path.realpath(candidate))
        roots = allowed_roots(settings, username)
        if not any(real == root or root in real.parents for root in roots):
            where = ", ".join(str(root) for root in roots)
            raise InvalidSpec(f"{field} {raw!r} is outside your allowed folders ({where})", field=field)
        if want_dir and not real.is_dir():
            raise InvalidSpec(f"{field} {raw!r} is not a folder", field=field)
        if not want_dir and not real.is_file():
            raise InvalidSpec(f"{field} {raw!r}: no such file", field=field)
    except OSError as exc:  # a name the file system refuses, a folder we may not look into
        raise InvalidSpec(f"{field} {raw!r}: {exc.strerror or exc}", field=field) from None
    return str(real)


def check_spec(
    spec: JobSpec,
    *,
    settings: Settings,
    username: str,
    inventory: Inventory | None,
    rule: QuotaRule | None = None,
    pools: Sequence[tuple[str, int]] = (),
) -> JobSpec:
    """The spec as it will be stored, or an error naming the field (InvalidSpec 422, Forbidden 403,
    PayloadTooLarge 413).  ``rule`` is the user's resolved quota; ``pools`` are (GPU type, GPUs per
    node) of node pools the cluster can add, whose types are valid although no node has them yet.
    A job no node (in any state) or pool could ever hold is refused here, by the same definition of
    "fits" the scheduler uses (``fit``), so that it never waits in the queue for ever.  ``inventory``
    None: the executor has not seen its cluster yet (the API server was down when the service started);
    the checks that need it are then the scheduler's, which says why a job waits."""
    rule = rule or QuotaRule()
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
    updates["priority"] = _check_priority(spec.priority or settings.default_priority, settings, rule)
    updates["timeout_seconds"] = _check_timeout(spec.timeout_seconds, rule)
    gpu_type = normalise_gpu_type(spec.gpu_type, aliases=settings.gpu_type_aliases)
    gpus = spec.gpus_wanted
    allowed_types: tuple[str, ...] | None = None
    if gpus:
        allowed_types = _check_gpu_type(spec.gpu_type, gpu_type, settings, inventory, rule, pools)
    cpu, memory = cpu_and_memory(spec)
    if inventory is not None:
        _check_fits(Shape(gpu_type, gpus, cpu, memory, allowed_types), inventory, pools)
    if gpus:
        _check_gpu_quota(gpu_type, gpus, settings, rule)
    updates["gpu_type"] = gpu_type
    updates["gpu_count"] = gpus
    updates["gpu_required"] = gpus > 0
    images = rule.allowed_images if rule.allowed_images is not None else settings.allowed_images
    if spec.image is not None and spec.image not in images:
        allowed = ", ".join(images) or "none"
        raise InvalidSpec(f"image {spec.image!r} is not allowed; allowed images: {allowed}", field="image")
    return spec.model_copy(update=updates)


def _check_priority(name: str, settings: Settings, rule: QuotaRule) -> str:
    if name not in settings.priorities:
        known = ", ".join(settings.priorities)
        raise InvalidSpec(f"priority {name!r} is not one of: {known}", field="priority")
    if rule.allowed_priorities is not None and name not in rule.allowed_priorities:
        allowed = ", ".join(rule.allowed_priorities) or "none"
        raise Forbidden(
            f"priority {name!r} is not allowed for you; your priorities: {allowed}", field="priority"
        )
    return name


def _check_timeout(timeout: int | None, rule: QuotaRule) -> int | None:
    """Jobs without a timeout get the quota's maximum: every job then has a known latest end,
    which is what lets small jobs backfill safely."""
    limit = rule.max_timeout_seconds
    if limit is None:
        return timeout
    if timeout is None:
        return limit
    if timeout > limit:
        raise InvalidSpec(
            f"timeout_seconds {timeout} is over your limit of {limit} s", field="timeout_seconds"
        )
    return timeout


def _check_gpu_type(
    asked: str,
    gpu_type: str,
    settings: Settings,
    inventory: Inventory | None,
    rule: QuotaRule,
    pools: Sequence[tuple[str, int]],
) -> tuple[str, ...] | None:
    """Refuse a GPU type no node or pool has, or one the user may not use; return the types the user
    may use (None: all), which also limit what ``any`` may take."""
    aliases = settings.gpu_type_aliases
    pool_types = {pool_type for pool_type, _ in pools}
    known = types_with_families((inventory.gpu_types() if inventory is not None else set()) | pool_types)
    if inventory is not None and gpu_type != ANY and gpu_type not in known:
        listed = ", ".join(sorted(known | {ANY})) if known else "none: this executor has no GPUs"
        raise InvalidSpec(
            f"gpu_type {asked!r} is not available here; known types: {listed}", field="gpu_type"
        )
    if rule.allowed_gpu_types is None:
        return None
    allowed = tuple(normalise_gpu_type(t, aliases=aliases) for t in rule.allowed_gpu_types)
    if gpu_type != ANY and not any(satisfies(gpu_type, a) for a in allowed):
        raise InvalidSpec(
            f"gpu_type {asked!r} is not allowed for you; allowed types: {', '.join(allowed)}",
            field="gpu_type",
        )
    return allowed


def cpu_and_memory(spec: JobSpec) -> tuple[float, float]:
    """Cores and bytes the spec asks for, 0 when it does not say (the spec's validation has already
    refused quantities that do not parse)."""
    cpu = parse_cpu(spec.cpu_limit) if spec.cpu_limit else 0.0
    memory = float(parse_memory(spec.memory_limit)) if spec.memory_limit else 0.0
    return cpu, memory


_sizes_seen: list[tuple[tuple[object, ...], tuple[tuple[str, int], ...], ClusterSizes]] = []


def _cluster_sizes(inventory: Inventory, pools: Sequence[tuple[str, int]]) -> ClusterSizes:
    """The node sizes of this inventory, worked out once: an inventory is replaced, never changed, when
    the cluster changes, and reading 5,000 nodes on every submission would cost milliseconds each."""
    pools = tuple(pools)
    for nodes, seen_pools, sizes in _sizes_seen:
        if nodes is inventory.nodes and seen_pools == pools:
            return sizes
    sizes = ClusterSizes(inventory.nodes, pools)
    _sizes_seen[:] = [(inventory.nodes, pools, sizes)]
    return sizes


def _check_fits(shape: Shape, inventory: Inventory, pools: Sequence[tuple[str, int]]) -> None:
    """Refuse a job no node could ever hold: the scheduler would keep it queued for ever."""
    misfit = _cluster_sizes(inventory, pools).why_never_fits(shape)
    if misfit is not None:
        raise InvalidSpec(misfit.message, field=misfit.field)


def _check_gpu_quota(gpu_type: str, gpus: int, settings: Settings, rule: QuotaRule) -> None:
    aliases = settings.gpu_type_aliases
    if rule.max_gpus is not None and gpus > rule.max_gpus:
        raise InvalidSpec(
            f"gpu_count {gpus} is more than your quota of {rule.max_gpus} GPUs", field="gpu_count"
        )
    for limited, limit in (rule.max_gpus_per_type or {}).items():
        if (
            gpu_type != ANY
            and satisfies(gpu_type, normalise_gpu_type(limited, aliases=aliases))
            and gpus > limit
        ):
            raise InvalidSpec(
                f"gpu_count {gpus} is more than your quota of {limit} {limited} GPUs", field="gpu_count"
            )

"""The admission policy: pure, no I/O.  ``decide(requests, snapshot) -> Decision``.

Jobs are considered in queue order (their submission order).  Each one that fits is admitted onto
the node that fits it most tightly, so big free blocks stay whole for big jobs; each one that does not
fit stays queued with a reason a person can act on, and its position in the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..gputypes import ANY, satisfies
from ..inventory import Node


@dataclass(frozen=True)
class Request:
    """A queued job, as far as the policy cares."""

    job_id: str
    gpu_count: int
    gpu_type: str = ANY
    cpu: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    """The nodes, the GPUs that active jobs hold (node → device indices) and the CPU they reserve."""

    nodes: tuple[Node, ...]
    held_gpus: Mapping[str, frozenset[str]] = field(default_factory=dict)
    held_cpu: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Admission:
    job_id: str
    node: str
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class Waiting:
    job_id: str
    position: int
    reason: str


@dataclass(frozen=True)
class Decision:
    admissions: tuple[Admission, ...]
    waiting: tuple[Waiting, ...]


@dataclass
class _Free:
    node: Node
    gpus: list[str]  # free device indices, in device order
    cpu: float


def _free_capacity(snapshot: Snapshot) -> list[_Free]:
    free = []
    for node in snapshot.nodes:
        if not node.offers:
            continue
        held = snapshot.held_gpus.get(node.name, frozenset())
        gpus = [device.index for device in node.devices if device.index not in held]
        free.append(_Free(node, gpus, node.cpu_cores - snapshot.held_cpu.get(node.name, 0.0)))
    return free


def _matching(slot: _Free, gpu_type: str) -> list[str]:
    types = {device.index: device.gpu_type for device in slot.node.devices}
    return [index for index in slot.gpus if satisfies(types[index], gpu_type)]


def _choose_devices(slot: _Free, request: Request) -> list[str] | None:
    """Devices of one exact type on this node for the request, or None when they are too few."""
    if request.gpu_count == 0:
        return []
    types = {device.index: device.gpu_type for device in slot.node.devices}
    by_type: dict[str, list[str]] = {}
    for index in _matching(slot, request.gpu_type):
        by_type.setdefault(types[index], []).append(index)
    fitting = [indices for indices in by_type.values() if len(indices) >= request.gpu_count]
    if not fitting:
        return None
    tightest = min(fitting, key=len)
    return tightest[: request.gpu_count]


def _cpu_fits(slot: _Free, request: Request) -> bool:
    return request.cpu <= 0 or request.cpu <= slot.cpu + 1e-9


def _place(free: list[_Free], request: Request) -> tuple[_Free, list[str]] | None:
    best: tuple[int, _Free, list[str]] | None = None
    for slot in free:
        if not _cpu_fits(slot, request):
            continue
        devices = _choose_devices(slot, request)
        if devices is None:
            continue
        spare = len(_matching(slot, request.gpu_type)) - len(devices)
        if best is None or spare < best[0]:
            best = (spare, slot, devices)
    return (best[1], best[2]) if best else None


def explain_wait(request: Request, nodes: Sequence[Node], free: Iterable[_Free]) -> str:
    """Why ``request`` cannot start now, in words ("no free a100: 0 of 2")."""
    free = list(free)
    label = "GPU" if request.gpu_type == ANY else request.gpu_type
    if request.gpu_count:
        total = sum(
            1 for node in nodes for device in node.devices if satisfies(device.gpu_type, request.gpu_type)
        )
        offered = sum(
            1
            for node in nodes
            if node.offers
            for device in node.devices
            if satisfies(device.gpu_type, request.gpu_type)
        )
        free_count = sum(len(_matching(slot, request.gpu_type)) for slot in free)
        if total == 0:
            return f"no {label} in the inventory"
        if offered == 0:
            return f"no {label} available: every node with one is cordoned or not ready"
        if free_count < request.gpu_count:
            return f"no free {label}: {free_count} of {total} free, {request.gpu_count} needed"
        most = max((len(_matching(slot, request.gpu_type)) for slot in free), default=0)
        if most < request.gpu_count:
            return (
                f"needs {request.gpu_count} free {label}s on one node; {free_count} of {total} are free, "
                f"at most {most} on one node"
            )
    largest = max((node.cpu_cores for node in nodes if node.offers), default=0.0)
    if request.cpu > largest:
        return f"needs {request.cpu:g} CPU cores but the largest node has {largest:g}"
    spare = max((slot.cpu for slot in free), default=0.0)
    return f"waiting for CPU: needs {request.cpu:g} cores, at most {max(spare, 0):g} free on one node"


def decide(requests: Sequence[Request], snapshot: Snapshot) -> Decision:
    """Admit what fits, in queue order; say why the rest waits."""
    free = _free_capacity(snapshot)
    admissions: list[Admission] = []
    waiting: list[Waiting] = []
    # Capacity only shrinks within a cycle, so a shape that did not fit once will not fit later in
    # the same cycle: long queues of similar jobs cost one placement attempt per shape, not per job.
    unplaceable: dict[tuple[int, str, float], str] = {}
    for request in requests:
        shape = (request.gpu_count, request.gpu_type, request.cpu)
        known_reason = unplaceable.get(shape)
        placed = None if known_reason else _place(free, request)
        if placed is None:
            reason = known_reason or explain_wait(request, snapshot.nodes, free)
            unplaceable[shape] = reason
            waiting.append(Waiting(request.job_id, len(waiting) + 1, reason))
            continue
        slot, devices = placed
        slot.gpus = [index for index in slot.gpus if index not in devices]
        slot.cpu -= max(request.cpu, 0.0)
        admissions.append(Admission(request.job_id, slot.node.name, tuple(devices)))
    return Decision(tuple(admissions), tuple(waiting))

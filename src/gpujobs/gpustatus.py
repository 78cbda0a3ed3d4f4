"""The ``gpu-status`` answer, built from an inventory and what jobs hold.  Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .inventory import Inventory
from .models import GpuDevice, GpuNodeView, GpuStatus, GpuTypeSummary
from .store.records import JobRecord


def holders(active_jobs: Sequence[JobRecord]) -> dict[tuple[str, str], str]:
    """(node, device index) → the job holding it."""
    return {(job.node, index): job.job_id for job in active_jobs if job.node for index in job.gpus}


def build_gpu_status(
    inventory: Inventory,
    active_jobs: Sequence[JobRecord],
    queued_demand: Mapping[str, int],
    *,
    include_nodes: bool = True,
    external: Mapping[str, Sequence[str]] | None = None,
) -> GpuStatus:
    """``external``: per node, device slots held by workloads that are not gpujobs jobs."""
    held = holders(active_jobs)
    for node_name, indices in (external or {}).items():
        for index in indices:
            held[(node_name, index)] = "other-workloads"
    per_type: dict[str, list[int]] = {}  # type → [total, available, used]
    nodes = []
    for node in inventory.nodes:
        devices = []
        available_here = 0
        for device in node.devices:
            holder = held.get((node.name, device.index))
            free = holder is None and node.offers
            available_here += free
            counts = per_type.setdefault(device.gpu_type, [0, 0, 0])
            counts[0] += 1
            counts[1] += free
            counts[2] += holder is not None
            if include_nodes:
                devices.append(
                    GpuDevice(
                        index=device.index,
                        uuid=device.uuid,
                        gpu_type=device.gpu_type,
                        product=device.product,
                        memory_mib=device.memory_mib,
                        utilization_percent=device.utilization_percent,
                        simulated=device.simulated,
                        job_id=holder,
                    )
                )
        types = {device.gpu_type for device in node.devices}
        total_here = len(node.devices)
        used_here = sum(1 for device in node.devices if (node.name, device.index) in held)
        if include_nodes:
            nodes.append(
                GpuNodeView(
                    name=node.name,
                    gpu_type=types.pop() if len(types) == 1 else (None if not types else "mixed"),
                    total=total_here,
                    available=available_here,
                    used=used_here,
                    ready=node.ready,
                    schedulable=node.schedulable,
                    taints=list(node.taints),
                    devices=devices,
                )
            )
    for gpu_type in queued_demand:
        per_type.setdefault(gpu_type, [0, 0, 0])
    summaries = [
        GpuTypeSummary(
            gpu_type=gpu_type,
            total=total,
            available=available,
            used=used,
            queued_demand=queued_demand.get(gpu_type, 0),
        )
        for gpu_type, (total, available, used) in sorted(per_type.items())
    ]
    total = sum(s.total for s in summaries)
    available = sum(s.available for s in summaries)
    return GpuStatus(
        total_gpus=total,
        available_gpus=available,
        used_gpus=sum(s.used for s in summaries),
        gpu_types=summaries,
        gpu_nodes=nodes,
        last_updated=inventory.updated_at,
        source=inventory.source,
    )

"""What an executor offers: nodes and their GPUs.  Plain data, shared by executors and the scheduler."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .fit import most_of_one_type


@dataclass(frozen=True)
class Device:
    """One GPU (or one MIG slice) a job can be given whole."""

    index: str
    gpu_type: str
    product: str
    uuid: str | None = None
    memory_mib: int | None = None
    utilization_percent: int | None = None
    simulated: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    devices: tuple[Device, ...] = ()
    cpu_cores: float = 0.0
    memory_bytes: float = 0.0  # allocatable memory; 0: unknown, and then memory does not limit the node
    ready: bool = True
    schedulable: bool = True
    taints: tuple[str, ...] = ()

    @property
    def offers(self) -> bool:
        """A cordoned or NotReady node offers nothing."""
        return self.ready and self.schedulable


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[Node, ...]
    source: str
    updated_at: datetime
    # Type names a user may ask for although no node has them now (e.g. node pools that scale from 0).
    extra_types: frozenset[str] = field(default_factory=frozenset)

    def gpu_types(self) -> set[str]:
        return {device.gpu_type for node in self.nodes for device in node.devices} | set(self.extra_types)

    def most_on_one_node(self, gpu_type: str) -> int:
        """The most devices of one exact type serving ``gpu_type`` that any one node has (ready or
        not): the most GPUs one job of that type can have, since a job's GPUs are all of one type."""
        return max((most_of_one_type(node, gpu_type) for node in self.nodes), default=0)


def slots_held_by_others(node: Node, ours: Collection[str], holds: Mapping[str, int]) -> list[str]:
    """Which of a node's device slots to show as held by other workloads, ``holds`` devices of each
    type: of the slots of that type gpujobs' own jobs do not hold, the highest indices (Kubernetes does
    not say which physical GPUs a pod got)."""
    slots: list[str] = []
    for gpu_type, count in holds.items():
        free = [d.index for d in reversed(node.devices) if d.gpu_type == gpu_type and d.index not in ours]
        slots += free[:count]
    return slots

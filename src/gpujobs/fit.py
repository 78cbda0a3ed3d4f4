"""What "fits" means, in one place.  Pure: nodes and a job's shape in, answers out.

The submit check (``admission``) and the scheduler policy both ask this module, so that a job accepted
at submit is one the policy can place once the cluster is free, and a job the policy could never place
is refused at submit (DESIGN §4: no user input can block others).

A job *fits* a node when the node, empty, could hold all of it at once:

- ``gpu_count`` devices of ONE exact device type that serves the wanted type.  A job's GPUs are alike:
  an ``a100`` job may run on ``a100-80gb`` devices, but not on one ``a100`` plus one ``a100-80gb``.
  With a quota's allowed types, the device type must also be one of them.
- ``cpu`` cores at most the node's cores (when the job asks for CPU);
- ``memory`` bytes at most the node's memory (when the job asks for memory and the node's is known).

A job *never fits* when no node fits it, whatever state the nodes are in (a cordoned or NotReady node
may come back), and no node pool the cluster can add could hold its GPUs (a pool's CPU and memory are
unknown, so they are not held against it).

    >>> from gpujobs.inventory import Device, Node
    >>> mixed = Node("n", (Device("0", "a100", "A100"), Device("1", "a100-80gb", "A100")), cpu_cores=8)
    >>> node_fits(mixed, Shape("a100", 1, cpu=8))
    True
    >>> never_fits([mixed], Shape("a100", 2))  # doctest: +NORMALIZE_WHITESPACE
    "gpu_count 2 is more than any node has: at most 1 a100 on one node (a job's GPUs are all of one
    type; n has 1 a100, 1 a100-80gb)"
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .gputypes import ANY, satisfies

if TYPE_CHECKING:
    from .inventory import Node

# Cores and bytes are compared with a little slack: "0.1" + "0.2" cores must fit in "0.3".
_SLACK = 1e-9


@dataclass(frozen=True)
class Shape:
    """What a job needs on one node: GPUs of one type, CPU cores, memory bytes (0: not asked).
    ``allowed_types``: the GPU types the user's quota allows (None: all)."""

    gpu_type: str = ANY
    gpu_count: int = 0
    cpu: float = 0.0
    memory: float = 0.0
    allowed_types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Misfit:
    """Why a shape fits nowhere: the job spec field to change, and what to change it to."""

    field: str
    message: str


def serves(device_type: str, gpu_type: str, allowed_types: tuple[str, ...] | None = None) -> bool:
    """Whether a device of this exact type may run a job asking for ``gpu_type`` under a quota that
    allows only ``allowed_types`` (None: all)."""
    return satisfies(device_type, gpu_type) and (
        allowed_types is None or any(satisfies(device_type, allowed) for allowed in allowed_types)
    )


def most_of_one_type(node: Node, gpu_type: str, allowed_types: tuple[str, ...] | None = None) -> int:
    """The most devices of one exact type serving ``gpu_type`` that the node has: the largest GPU
    count one job of that type can have there."""
    return _Size.of(node).most_serving(gpu_type, allowed_types)


def node_fits(node: Node, shape: Shape) -> bool:
    """Whether the node, empty, could hold the whole job at once (its state aside: cordoned or not)."""
    return _Size.of(node).holds(shape)


def why_never_fits(
    nodes: Iterable[Node], shape: Shape, pools: Sequence[tuple[str, int]] = ()
) -> Misfit | None:
    """None when some node (in any state) or node pool could hold the job; else what to change.
    ``pools`` are (GPU type, GPUs per node) of node pools the cluster can add."""
    return ClusterSizes(nodes, pools).why_never_fits(shape)


def never_fits(nodes: Iterable[Node], shape: Shape, pools: Sequence[tuple[str, int]] = ()) -> str | None:
    """None when some node (in any state) or node pool could hold the job; else why not, naming the
    largest node there is ("cpu_limit 1000 is more than any node has: at most 2 cores")."""
    misfit = why_never_fits(nodes, shape, pools)
    return misfit.message if misfit else None


@dataclass(frozen=True)
class _Size:
    """What one node could hold when empty.  Many nodes share a size (a node pool's nodes are alike):
    sizes are compared once each, not once per node."""

    name: str
    gpus: tuple[tuple[str, int], ...]  # (exact device type, how many), sorted by type
    cpu: float
    memory: float  # 0: unknown

    @classmethod
    def of(cls, node: Node) -> _Size:
        return cls(node.name, *_size_key(node))

    def most_serving(self, gpu_type: str, allowed_types: tuple[str, ...] | None) -> int:
        return max(
            (count for device_type, count in self.gpus if serves(device_type, gpu_type, allowed_types)),
            default=0,
        )

    def holds_gpus(self, shape: Shape) -> bool:
        return (
            shape.gpu_count <= 0 or self.most_serving(shape.gpu_type, shape.allowed_types) >= shape.gpu_count
        )

    def holds_cpu(self, shape: Shape) -> bool:
        return shape.cpu <= 0 or shape.cpu <= self.cpu + _SLACK

    def holds_memory(self, shape: Shape) -> bool:
        return shape.memory <= 0 or self.memory <= 0 or shape.memory <= self.memory + _SLACK

    def holds(self, shape: Shape) -> bool:
        return self.holds_gpus(shape) and self.holds_cpu(shape) and self.holds_memory(shape)


_SizeKey = tuple[tuple[tuple[str, int], ...], float, float]
_GPU_TYPE = operator.attrgetter("gpu_type")


def _size_key(node: Node) -> _SizeKey:
    """(GPUs per exact type, cores, memory): equal for nodes that could hold the same jobs."""
    types = list(map(_GPU_TYPE, node.devices))
    if not types:
        gpus: tuple[tuple[str, int], ...] = ()
    elif types.count(types[0]) == len(types):  # the usual node: all its GPUs alike
        gpus = ((types[0], len(types)),)
    else:
        gpus = tuple(sorted(Counter(types).items()))
    return gpus, node.cpu_cores, node.memory_bytes


_MAX_REMEMBERED = 4096  # answers per shape kept by one ClusterSizes


class ClusterSizes:
    """The sizes of every node, each distinct size once, with the answer per shape kept: the policy
    asks about the same few shapes for a whole queue.  Build one per inventory, it does not follow
    changes.

        >>> from gpujobs.inventory import Node
        >>> sizes = ClusterSizes([Node("vm", cpu_cores=2)])
        >>> sizes.never_fits(Shape(cpu=1000))
        'cpu_limit 1000 is more than any node has: at most 2 cores'
        >>> sorted(sizes.nodes_fitting(Shape(cpu=2)))
        ['vm']
    """

    def __init__(self, nodes: Iterable[Node], pools: Sequence[tuple[str, int]] = ()) -> None:
        self.size_of: dict[str, _SizeKey] = {}  # by node name
        self.sizes: dict[_SizeKey, _Size] = {}
        # One key object per distinct size, shared by its nodes: a kept tuple per node would make the
        # garbage collector run more often in the middle of a scheduling cycle.
        shared: dict[_SizeKey, _SizeKey] = {}
        for node in nodes:
            fresh = _size_key(node)
            key = shared.setdefault(fresh, fresh)
            if key is fresh:  # the first node of a size names it in messages
                self.sizes[key] = _Size(node.name, *key)
            self.size_of[node.name] = key
        self.pools = tuple(pools)
        self._answers: dict[Shape, Misfit | None] = {}
        self._fitting: dict[Shape, frozenset[str]] = {}

    def nodes_fitting(self, shape: Shape) -> frozenset[str]:
        """The names of the nodes that could hold the job once empty (in any state)."""
        if shape not in self._fitting:
            holding = {key for key, size in self.sizes.items() if size.holds(shape)}
            self._fitting[shape] = frozenset(name for name, key in self.size_of.items() if key in holding)
        return self._fitting[shape]

    def why_never_fits(self, shape: Shape) -> Misfit | None:
        if shape not in self._answers:
            if len(self._answers) >= _MAX_REMEMBERED:  # submissions choose shapes: keep memory bounded
                self._answers.clear()
            self._answers[shape] = self._why_never_fits(shape)
        return self._answers[shape]

    def never_fits(self, shape: Shape) -> str | None:
        misfit = self.why_never_fits(shape)
        return misfit.message if misfit else None

    def _why_never_fits(self, shape: Shape) -> Misfit | None:
        sizes = list(self.sizes.values())
        if shape.gpu_count > 0:
            serving_pools = [
                per_node
                for pool_type, per_node in self.pools
                if serves(pool_type, shape.gpu_type, shape.allowed_types)
            ]
            if any(per_node >= shape.gpu_count for per_node in serving_pools):
                return None  # the cluster can add a node for it
            if not sizes and not self.pools:
                return None  # nothing known yet (a watch cache before its first list): no grounds to refuse
            misfit = _gpus_misfit(shape, sizes, serving_pools)
            if misfit:
                return misfit
        if not sizes:
            return None
        if shape.cpu > 0:
            largest_cpu = max(size.cpu for size in sizes)
            if shape.cpu > largest_cpu + _SLACK:
                return Misfit(
                    "cpu_limit",
                    f"cpu_limit {shape.cpu:g} is more than any node has: at most {_cores(largest_cpu)}",
                )
        if shape.memory > 0 and all(size.memory > 0 for size in sizes):
            largest_memory = max(size.memory for size in sizes)
            if shape.memory > largest_memory + _SLACK:
                return Misfit(
                    "memory_limit",
                    f"memory_limit {_quantity(shape.memory)} is more than any node has: "
                    f"at most {size_text(largest_memory)}",
                )
        if any(size.holds(shape) for size in sizes):
            return None
        return _combination_misfit(shape, sizes)


def _gpus_misfit(shape: Shape, sizes: Sequence[_Size], serving_pools: Sequence[int]) -> Misfit | None:
    """The GPU part alone: a type no node or pool has, or more of one type than any node has."""
    label = _gpu_label(shape.gpu_type)
    most = max(
        [size.most_serving(shape.gpu_type, shape.allowed_types) for size in sizes] + list(serving_pools),
        default=0,
    )
    if most == 0:
        kind = "" if shape.gpu_type == ANY else f"{shape.gpu_type} "
        if shape.allowed_types is not None:
            allowed = ", ".join(shape.allowed_types) or "none"
            return Misfit(
                "gpu_type", f"no node has {kind}GPUs of a type you may use (your allowed types: {allowed})"
            )
        return Misfit("gpu_type", f"no node has {kind}GPUs")
    if most >= shape.gpu_count:
        return None
    message = f"gpu_count {shape.gpu_count} is more than any node has: at most {most} {label} on one node"
    # The surprise worth explaining: a node with enough GPUs of the family, but of different sizes.
    mixed = next(
        (
            size
            for size in sizes
            if sum(count for t, count in size.gpus if serves(t, shape.gpu_type, shape.allowed_types))
            >= shape.gpu_count
        ),
        None,
    )
    if mixed is not None:
        held = ", ".join(
            f"{count} {t}" for t, count in mixed.gpus if serves(t, shape.gpu_type, shape.allowed_types)
        )
        message += f" (a job's GPUs are all of one type; {mixed.name} has {held})"
    return Misfit("gpu_count", message)


def _combination_misfit(shape: Shape, sizes: Sequence[_Size]) -> Misfit:
    """Every part fits on some node, but no node holds them all: name the biggest node that has the
    GPUs (or any node, for a CPU-only job) so the person sees what to lower."""
    wants = _wants(shape)
    candidates = [size for size in sizes if size.holds_gpus(shape)]
    largest = max(candidates, key=lambda size: (size.cpu, size.memory))
    has: list[str] = []
    if shape.gpu_count > 0:
        has.append(_gpus(largest.most_serving(shape.gpu_type, shape.allowed_types), ANY))
        kind = f"{_gpu_label(shape.gpu_type)} node"
    else:
        kind = "node"
    has.append(_cores(largest.cpu))
    if largest.memory > 0:
        has.append(size_text(largest.memory))
    together = wants[0]
    if len(wants) > 1:
        together += " together with " + " and ".join(wants[1:])
    return Misfit(
        "gpu_count" if shape.gpu_count > 0 else "cpu_limit",
        f"no node has {together}; the largest {kind}, {largest.name}, has {', '.join(has)}",
    )


# --- words ----------------------------------------------------------------------------------------------


def describe(shape: Shape) -> str:
    """What the job asks of one node, in words: ``2 t4 GPUs, 8 CPU cores and 16Gi memory``."""
    wants = _wants(shape) or ["nothing"]
    return wants[0] if len(wants) == 1 else ", ".join(wants[:-1]) + " and " + wants[-1]


def _wants(shape: Shape) -> list[str]:
    wants: list[str] = []
    if shape.gpu_count > 0:
        wants.append(_gpus(shape.gpu_count, shape.gpu_type))
    if shape.cpu > 0:
        wants.append(f"{shape.cpu:g} CPU cores")
    if shape.memory > 0:
        wants.append(f"{_quantity(shape.memory)} memory")
    return wants


def _gpu_label(gpu_type: str) -> str:
    return "GPU" if gpu_type == ANY else gpu_type


def _gpus(count: int, gpu_type: str) -> str:
    kind = "" if gpu_type == ANY else f"{gpu_type} "
    return f"{count} {kind}GPU{'' if count == 1 else 's'}"


def _cores(cores: float) -> str:
    return f"{cores:g} core{'' if cores == 1 else 's'}"


def size_text(count: float) -> str:
    """Bytes for people: ``23.4 GiB``, ``512 GiB``, ``768 MiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count:g} B"


def _quantity(count: float) -> str:
    """Bytes as the Kubernetes quantity a person most likely wrote: ``64Gi``, ``500M``, else a size."""
    whole = int(count)
    if whole == count and whole > 0:
        for suffix, factor in (
            ("Ti", 2**40),
            ("Gi", 2**30),
            ("Mi", 2**20),
            ("T", 10**12),
            ("G", 10**9),
            ("M", 10**6),
        ):
            if whole % factor == 0:
                return f"{whole // factor}{suffix}"
    return size_text(count)

"""GPU inventory from Kubernetes Node objects and the pods bound to them.  Pure: dicts in, data out.

- GPUs come from ``status.allocatable`` (not capacity): ``nvidia.com/gpu``, ``amd.com/gpu`` and MIG
  slices (``nvidia.com/mig-1g.10gb``: each slice a device of type ``<family>-mig-1g.10gb``).
- Used GPUs are the requests of every non-terminal pod bound to the node, in any namespace (a notebook
  server's GPU counts), with init containers counted as kube-scheduler counts them: the larger of the
  biggest init container and the sum of the app containers (``pod_gpu_requests``; ``cache.py`` sums
  them per node and hands ``kube_node`` what other workloads hold).
- The type comes from the labels clusters really carry (GPU feature discovery, GKE, EKS, the brief's
  ``accelerator``), through the one normaliser.
- CPU cores and memory bytes come from ``status.allocatable`` too (memory 0 when unreadable: unknown).
- A cordoned (unschedulable) or NotReady node offers nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...gputypes import family_of, normalise_gpu_type
from ...inventory import Device, Node
from ...quantities import QuantityError, parse_cpu, parse_memory

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
MIG_PREFIX = "nvidia.com/mig-"
# Label keys that name a node's GPU, most specific first.
TYPE_LABELS = (
    "nvidia.com/gpu.product",
    "cloud.google.com/gke-accelerator",
    "k8s.amazonaws.com/accelerator",
    "accelerator",
)
MEMORY_LABEL = "nvidia.com/gpu.memory"
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    def toleration(self) -> dict[str, str]:
        if self.value:
            return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}
        return {"key": self.key, "operator": "Exists", "effect": self.effect}


@dataclass(frozen=True)
class KubeNode:
    """A node as the executor needs it: the generic ``Node`` plus what manifests need to target it."""

    node: Node
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    type_label: str | None = None  # the label key that names its GPU type
    # Devices held by pods that are not gpujobs jobs, per device type (whole GPUs, MIG slices).
    held_by_others: Mapping[str, int] = field(default_factory=dict)


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_gpu_request(pod: Mapping[str, Any], resource: str) -> int:
    """GPUs a pod holds, as kube-scheduler counts them."""
    spec = pod.get("spec", {})

    def request(container: Mapping[str, Any]) -> int:
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        return _quantity(
            requests.get(resource, limits.get(resource, 0))
        )  # extended resources: limit = request

    app = sum(request(c) for c in spec.get("containers", []))
    init = max((request(c) for c in spec.get("initContainers", [])), default=0)
    return max(app, init)


def is_gpu_resource(resource: str) -> bool:
    return resource in GPU_RESOURCES or resource.startswith(MIG_PREFIX)


def pod_gpu_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """GPU resources a pod requests, whole GPUs and MIG slices alike (``{"nvidia.com/gpu": 2}``)."""
    spec = pod.get("spec", {})
    named = {
        resource
        for container in [*spec.get("containers", []), *spec.get("initContainers", [])]
        for part in ("limits", "requests")
        for resource in (container.get("resources", {}).get(part) or {})
        if is_gpu_resource(resource)
    }
    wanted = {resource: pod_gpu_request(pod, resource) for resource in sorted(named)}
    return {resource: count for resource, count in wanted.items() if count}


def gpu_type_from_labels(
    labels: Mapping[str, str], aliases: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """(canonical type, label key used); ``("gpu", None)`` when no label names it."""
    memory = labels.get(MEMORY_LABEL)
    memory_mib = float(memory) if memory and memory.isdigit() else None
    for key in TYPE_LABELS:
        if labels.get(key):
            return normalise_gpu_type(labels[key], memory_mib=memory_mib, aliases=aliases), key
    return "gpu", None


def _ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def kube_node(
    node: Mapping[str, Any],
    *,
    aliases: Mapping[str, str] | None = None,
    used_by_others: Mapping[str, int] | None = None,
) -> KubeNode:
    """Inventory of one node.  ``used_by_others``: GPU resources (``nvidia.com/gpu``, a MIG slice) held
    by pods bound to it that are not gpujobs' (gpujobs' own are accounted for by the store)."""
    metadata, status = node.get("metadata", {}), node.get("status", {})
    labels = dict(metadata.get("labels") or {})
    allocatable = status.get("allocatable", {})
    gpu_type, type_label = gpu_type_from_labels(labels, aliases)
    devices: list[Device] = []
    type_of: dict[str, str] = {}  # GPU resource → the type of the devices it gives
    product = labels.get("nvidia.com/gpu.product") or labels.get(type_label or "", gpu_type)
    memory = labels.get(MEMORY_LABEL, "")
    memory_mib = int(memory) if memory.isdigit() else None  # GPU feature discovery's, per GPU
    for resource in GPU_RESOURCES:
        type_of[resource] = gpu_type
        for _ in range(_quantity(allocatable.get(resource, 0))):
            devices.append(
                Device(index=str(len(devices)), gpu_type=gpu_type, product=product, memory_mib=memory_mib)
            )
    for resource, amount in sorted(allocatable.items()):
        if resource.startswith(MIG_PREFIX):
            profile = resource[len(MIG_PREFIX) :]
            mig_type = type_of[resource] = f"{family_of(gpu_type)}-mig-{profile}"
            for _ in range(_quantity(amount)):
                devices.append(
                    Device(index=str(len(devices)), gpu_type=mig_type, product=f"{product} MIG {profile}")
                )
    held: dict[str, int] = {}
    for resource, count in (used_by_others or {}).items():
        if resource in type_of:
            held[type_of[resource]] = held.get(type_of[resource], 0) + count
    held = {
        device_type: min(count, sum(1 for d in devices if d.gpu_type == device_type))
        for device_type, count in held.items()
    }
    taints = tuple(
        Taint(t["key"], t.get("value"), t["effect"]) for t in node.get("spec", {}).get("taints", []) or []
    )
    try:
        cpu = parse_cpu(str(allocatable.get("cpu", "0")))
    except QuantityError:
        cpu = 0.0
    try:
        memory = float(parse_memory(str(allocatable.get("memory", "0"))))
    except QuantityError:
        memory = 0.0  # unknown: memory then limits nothing on this node, rather than everything
    generic = Node(
        name=metadata.get("name", ""),
        devices=tuple(devices),
        cpu_cores=cpu,
        memory_bytes=memory,
        ready=_ready(node),
        schedulable=not node.get("spec", {}).get("unschedulable", False),
        taints=tuple(str(t) for t in taints),
    )
    return KubeNode(generic, labels, taints, type_label, {t: n for t, n in held.items() if n})

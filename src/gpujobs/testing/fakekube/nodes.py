"""Realistic nodes from a spec such as ``a100-80gb:8x2,t4:1x4,cpu:0x1`` (type : GPUs per node x nodes).

GPU nodes carry what GPU feature discovery and the NVIDIA device plugin put there: the
``nvidia.com/gpu.product`` / ``.memory`` / ``.count`` labels, ``nvidia.com/gpu`` in capacity and
allocatable, and the ``nvidia.com/gpu:NoSchedule`` taint most clusters use.
"""

from __future__ import annotations

import re
from typing import Any

PRODUCTS = {
    "a100-80gb": ("NVIDIA-A100-SXM4-80GB", 81920),
    "a100-40gb": ("NVIDIA-A100-SXM4-40GB", 40960),
    "a100": ("NVIDIA-A100-SXM4-40GB", 40960),
    "h100-80gb": ("NVIDIA-H100-80GB-HBM3", 81559),
    "h100": ("NVIDIA-H100-80GB-HBM3", 81559),
    "v100": ("Tesla-V100-SXM2-16GB", 16384),
    "v100-16gb": ("Tesla-V100-SXM2-16GB", 16384),
    "t4": ("Tesla-T4", 15360),
    "l4": ("NVIDIA-L4", 23034),
    "p100": ("Tesla-P100-PCIE-16GB", 16384),
}
_ITEM = re.compile(r"^(?P<type>[a-z0-9-]+):(?P<gpus>\d+)x(?P<count>\d+)$")


class SpecError(ValueError):
    pass


def parse_spec(spec: str) -> list[tuple[str, int, int]]:
    """``a100-80gb:8x2,cpu:0x1`` → ``[("a100-80gb", 8, 2), ("cpu", 0, 1)]``."""
    items = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _ITEM.match(part)
        if not match:
            raise SpecError(f"{part!r} is not TYPE:GPUSxNODES (e.g. a100-80gb:8x2)")
        items.append((match["type"], int(match["gpus"]), int(match["count"])))
    if not items:
        raise SpecError("no nodes in the spec")
    return items


def node_objects(spec: str, *, cpu: str = "32", memory: str = "256Gi") -> list[dict[str, Any]]:
    nodes = []
    for gpu_type, gpus, count in parse_spec(spec):
        for index in range(count):
            name = f"{gpu_type}-node-{index}" if gpus else f"cpu-node-{index}"
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            resources = {"cpu": cpu, "memory": memory, "pods": "110"}
            taints = []
            if gpus:
                product, memory_mib = PRODUCTS.get(gpu_type, (gpu_type.upper(), 16384))
                labels.update(
                    {
                        "nvidia.com/gpu.product": product,
                        "nvidia.com/gpu.memory": str(memory_mib),
                        "nvidia.com/gpu.count": str(gpus),
                        "nvidia.com/gpu.present": "true",
                    }
                )
                resources["nvidia.com/gpu"] = str(gpus)
                taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"taints": taints} if taints else {},
                    "status": {
                        "capacity": dict(resources),
                        "allocatable": dict(resources),
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    },
                }
            )
    return nodes


def other_pods(nodes: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` running pods that are not gpujobs', spread over ``nodes`` like a busy cluster's:
    mostly daemons and services without GPUs, and on every other GPU node a workload (a notebook
    server, a training run) holding half its GPUs.  They have no process: they only take room."""
    pods: list[dict[str, Any]] = []
    holders: set[str] = set()
    for index in range(count):
        node = nodes[index % len(nodes)]
        name = node["metadata"]["name"]
        gpus = int(node["status"]["allocatable"].get("nvidia.com/gpu", "0"))
        resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "128Mi"}}
        tolerations = []
        node_index = index % len(nodes)
        if gpus and node_index % 2 == 0 and name not in holders:
            holders.add(name)
            share = str(max(1, gpus // 2))
            resources = {
                "requests": {"cpu": "1", "nvidia.com/gpu": share},
                "limits": {"nvidia.com/gpu": share},
            }
            tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"workload-{index}",
                    "labels": {"app.kubernetes.io/name": "other-workload"},
                },
                "spec": {
                    "nodeName": name,
                    "containers": [
                        {"name": "main", "image": "registry.example/other:1", "resources": resources}
                    ],
                    "tolerations": tolerations,
                },
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "startTime": "2026-01-01T00:00:00Z",
                },
            }
        )
    return pods

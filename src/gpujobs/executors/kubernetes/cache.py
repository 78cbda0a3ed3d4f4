"""What the executor knows of the cluster, kept current from list+watch events.  No I/O.

Sized for 5,000 nodes and 100,000 pods (DESIGN §6): a pod that is not gpujobs' is remembered only as
the few numbers the inventory needs (``PodUsage``), gpujobs' own pods whole (their status tells a job's
state); an event recomputes only the node it touches, and the ``Inventory`` is rebuilt once per change
burst, when someone asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ...inventory import Inventory
from .nodes import TERMINAL_PHASES, KubeNode, kube_node, pod_gpu_requests

JOB_ID_LABEL = "gpujobs.io/job-id"


def is_ours(labels: Mapping[str, str]) -> bool:
    """Whether a pod with these labels runs a gpujobs job."""
    return labels.get("app.kubernetes.io/managed-by") == "gpujobs" and JOB_ID_LABEL in labels


@dataclass(frozen=True)
class PodUsage:
    """What a pod means for the inventory: the node it is bound to and the GPUs it holds there."""

    node: str
    gpus: tuple[tuple[str, int], ...]  # (GPU resource, count) it holds; none once it has finished
    job_id: str | None = None  # set for gpujobs' own pods (the store accounts for their GPUs)


def pod_usage(pod: Mapping[str, Any]) -> PodUsage:
    node = pod.get("spec", {}).get("nodeName") or ""
    finished = (pod.get("status") or {}).get("phase") in TERMINAL_PHASES
    gpus = () if finished else tuple(pod_gpu_requests(pod).items())
    labels = pod.get("metadata", {}).get("labels") or {}
    job_id = labels[JOB_ID_LABEL] if is_ours(labels) else None
    return PodUsage(node, gpus, job_id)


class ClusterCache:
    """Nodes, pods and gpujobs' Jobs by event; the inventory, gpujobs' pods and Jobs by question."""

    def __init__(self, *, aliases: Mapping[str, str] | None = None, extra_types: Iterable[str] = ()) -> None:
        self.aliases = dict(aliases or {})
        self.extra_types = frozenset(extra_types)
        self._nodes: dict[str, Mapping[str, Any]] = {}
        self._kube_nodes: dict[str, KubeNode] = {}
        self._usage: dict[str, PodUsage] = {}  # pod uid → usage
        self._held_by_others: dict[str, dict[str, int]] = {}  # node → GPU resources other pods hold
        self._ours: dict[str, dict[str, Mapping[str, Any]]] = {}  # job id → pod uid → pod
        self._jobs: dict[str, Mapping[str, Any]] = {}  # job id → its Kubernetes Job
        self._inventory: Inventory | None = None  # both rebuilt on demand after a change
        self._held: dict[str, Mapping[str, int]] | None = None

    # --- events ------------------------------------------------------------------------------------

    def replace_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        self._nodes = {node["metadata"]["name"]: node for node in nodes}
        self._kube_nodes = {name: self._kube_node(name) for name in self._nodes}
        self._inventory = self._held = None

    def node_event(self, kind: str, node: Mapping[str, Any]) -> None:
        name = node["metadata"]["name"]
        if kind == "DELETED":
            self._nodes.pop(name, None)
            self._kube_nodes.pop(name, None)
        else:
            self._nodes[name] = node
            self._kube_nodes[name] = self._kube_node(name)
        self._inventory = self._held = None

    def replace_pods(self, pods: Iterable[tuple[str, PodUsage, Mapping[str, Any] | None]]) -> None:
        """``(uid, usage, the whole pod if it is one of ours)`` for every pod in the cluster."""
        self._usage, self._held_by_others, self._ours = {}, {}, {}
        for uid, usage, whole in pods:
            self._add(uid, usage, whole)
        self._kube_nodes = {name: self._kube_node(name) for name in self._nodes}
        self._inventory = self._held = None

    def pod_event(self, kind: str, uid: str, usage: PodUsage, whole: Mapping[str, Any] | None) -> None:
        before = self._remove(uid)
        if kind != "DELETED":
            self._add(uid, usage, whole)
        for node in {before.node if before else "", usage.node} - {""}:
            if node in self._nodes:
                updated = self._kube_node(node)
                if updated != self._kube_nodes.get(node):
                    self._kube_nodes[node] = updated
                    self._inventory = self._held = None

    def _add(self, uid: str, usage: PodUsage, whole: Mapping[str, Any] | None) -> None:
        self._usage[uid] = usage
        if usage.job_id is not None:
            self._ours.setdefault(usage.job_id, {})[uid] = whole or {}
        elif usage.gpus and usage.node:
            held = self._held_by_others.setdefault(usage.node, {})
            for resource, count in usage.gpus:
                held[resource] = held.get(resource, 0) + count

    def _remove(self, uid: str) -> PodUsage | None:
        usage = self._usage.pop(uid, None)
        if usage is None:
            return None
        if usage.job_id is not None:
            pods = self._ours.get(usage.job_id, {})
            pods.pop(uid, None)
            if not pods:
                self._ours.pop(usage.job_id, None)
        elif usage.gpus and usage.node:
            held = self._held_by_others.get(usage.node, {})
            for resource, count in usage.gpus:
                held[resource] = held.get(resource, 0) - count
                if held[resource] <= 0:
                    del held[resource]
            if not held:
                self._held_by_others.pop(usage.node, None)
        return usage

    def replace_jobs(self, jobs: Iterable[Mapping[str, Any]]) -> None:
        """gpujobs' own Jobs (found by label), whole."""
        self._jobs = {}
        for job in jobs:
            self.job_event("ADDED", job)

    def job_event(self, kind: str, job: Mapping[str, Any]) -> None:
        job_id = (job.get("metadata", {}).get("labels") or {}).get(JOB_ID_LABEL)
        if not job_id:
            return
        if kind == "DELETED":
            self._jobs.pop(job_id, None)
        else:
            self._jobs[job_id] = job

    def job(self, job_id: str) -> Mapping[str, Any] | None:
        """The Kubernetes Job of a gpujobs job, as last seen."""
        return self._jobs.get(job_id)

    def jobs(self) -> dict[str, Mapping[str, Any]]:
        return dict(self._jobs)

    def _kube_node(self, name: str) -> KubeNode:
        return kube_node(
            self._nodes[name], aliases=self.aliases, used_by_others=self._held_by_others.get(name)
        )

    # --- questions ---------------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        if self._inventory is None:
            self._inventory = Inventory(
                nodes=tuple(self._kube_nodes[name].node for name in sorted(self._kube_nodes)),
                source="kubernetes",
                updated_at=datetime.now(timezone.utc),
                extra_types=self.extra_types,
            )
        return self._inventory

    def kube_nodes(self) -> list[KubeNode]:
        return list(self._kube_nodes.values())

    def held_by_others(self) -> dict[str, Mapping[str, int]]:
        """Per node, the devices (per type) held by pods that are not gpujobs jobs (notebook servers,
        other workloads)."""
        if self._held is None:
            self._held = {
                name: kube.held_by_others for name, kube in self._kube_nodes.items() if kube.held_by_others
            }
        return self._held

    def pods_of(self, job_id: str) -> list[Mapping[str, Any]]:
        """The job's pods (every attempt), oldest first."""
        pods = self._ours.get(job_id, {}).values()
        return sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")

"""The Kubernetes executor: jobs as batch/v1 Jobs, GPUs from the cluster's nodes.

- Inventory: nodes and pods (all namespaces) are listed once and then *watched* (resume from the last
  resourceVersion; 410 Gone → list again; dropped connections → retry with backoff), so ``inventory()``
  answers from memory and ``gpu-status`` makes no API call.
- Launch: the Job is named from the job id (creating it twice finds the first: 409 → adopt), pinned to
  the node the scheduler chose, with the script ConfigMap owned by the Job.
- State: from the Job's conditions and its pods (Running; Complete; DeadlineExceeded → Timeout;
  failures with the pod's reason: OOMKilled, exit codes, ImagePullBackOff).
- Logs: each pod's output is followed into ``<data_dir>/jobs/<id>/output.log``, so it outlives the
  Job's TTL and the service's log routes work unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import CascadeType

from ...config import Settings
from ...gputypes import satisfies
from ...inventory import Inventory
from ...models import JobStatus
from ...store.records import JobRecord
from ..base import EventSink, Executor, JobEvent, LaunchError
from .manifests import (
    MANAGED_BY,
    JobTemplate,
    Placement,
    job_manifest,
    owned_by,
    placement_for,
    script_configmap,
)
from .nodes import KubeNode, kube_node
from .slugs import job_name

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25


def _is_ours(pod: dict[str, Any]) -> bool:
    return pod.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/managed-by") == "gpujobs"


class KubernetesExecutor(Executor):
    name = "kubernetes"
    supports_pools = True

    def __init__(self, settings: Settings, on_event: EventSink) -> None:
        super().__init__(on_event)
        self.settings = settings
        self.namespace = settings.kube_namespace
        self.template = JobTemplate(
            namespace=self.namespace,
            image_cpu=settings.kube_image_cpu,
            image_gpu=settings.kube_image_gpu,
            run_as_user=settings.kube_run_as_user,
            home_claim_template=settings.kube_home_claim_template,
            shared_claim=settings.kube_shared_claim,
            pip_extra_args=tuple(settings.pip_extra_args),
        )
        self.client: AsyncClient | None = None
        self._nodes: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, dict[str, Any]] = {}  # uid → pod, every namespace
        self._kube_nodes: list[KubeNode] = []
        self._inventory = Inventory(nodes=(), source="kubernetes", updated_at=datetime.now(timezone.utc))
        self._tasks: list[asyncio.Task[None]] = []
        self._watched: dict[str, JobStatus] = {}  # our job id → last state reported
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._messages: dict[str, str] = {}  # the last waiting message reported per job

    # --- inventory ------------------------------------------------------------------------------

    async def start(self) -> None:
        config = (
            KubeConfig.from_file(self.settings.kubeconfig)
            if self.settings.kubeconfig
            else KubeConfig.from_env()
        )
        self.client = AsyncClient(config, namespace=self.namespace)
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        for kind, store in ((Node, self._nodes), (Pod, self._pods)):
            version = await self._list(kind, store)
            self._tasks.append(asyncio.create_task(self._watch(kind, store, version)))
        self._publish()
        self._tasks.append(asyncio.create_task(self._poll_jobs()))

    async def _list(self, kind: Any, store: dict[str, dict[str, Any]]) -> str:
        assert self.client is not None
        store.clear()
        namespace = "*" if kind is Pod else None
        items = self.client.list(kind, namespace=namespace) if namespace else self.client.list(kind)
        async for item in items:
            obj = item.to_dict()
            store[self._key(kind, obj)] = obj
        return str(getattr(items, "resourceVersion", "") or "")

    @staticmethod
    def _key(kind: Any, obj: dict[str, Any]) -> str:
        return obj["metadata"]["name"] if kind is Node else obj["metadata"]["uid"]

    async def _watch(self, kind: Any, store: dict[str, dict[str, Any]], version: str) -> None:
        assert self.client is not None
        delay = 0.5
        while True:
            try:
                namespace = "*" if kind is Pod else None
                stream = (
                    self.client.watch(kind, namespace=namespace, resource_version=version or None)
                    if namespace
                    else self.client.watch(kind, resource_version=version or None)
                )
                async for change, item in stream:
                    obj = item.to_dict()
                    version = obj["metadata"].get("resourceVersion", version)
                    if change == "DELETED":
                        store.pop(self._key(kind, obj), None)
                    else:
                        store[self._key(kind, obj)] = obj
                    self._publish()
                    delay = 0.5
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status.code == 410:  # history gone: start again from a fresh list
                    version = await self._list(kind, store)
                    self._publish()
                    continue
                log.warning("watch of %s failed: %s", kind.__name__, exc)
            except Exception as exc:
                log.warning("watch of %s dropped (%s); retrying in %.1f s", kind.__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _publish(self) -> None:
        pods_by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self._pods.values():
            node = pod.get("spec", {}).get("nodeName")
            if node:
                pods_by_node.setdefault(node, []).append(pod)
        aliases = self.settings.gpu_type_aliases
        self._kube_nodes = [
            kube_node(node, pods_by_node.get(name, ()), aliases=aliases, is_ours=_is_ours)
            for name, node in sorted(self._nodes.items())
        ]
        self._inventory = Inventory(
            nodes=tuple(k.node for k in self._kube_nodes),
            source="kubernetes",
            updated_at=datetime.now(timezone.utc),
            extra_types=frozenset(pool.gpu_type for pool in self.settings.pools),
        )

    def inventory(self) -> Inventory:
        return self._inventory

    def external_holds(self) -> dict[str, int]:
        """GPUs per node held by pods that are not gpujobs jobs (notebook servers, other workloads)."""
        return {k.node.name: k.gpus_used_by_others for k in self._kube_nodes if k.gpus_used_by_others}

    # --- launching ------------------------------------------------------------------------------

    def log_path(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id / "output.log"

    def _placement(self, job: JobRecord) -> Placement:
        placement = placement_for(job.gpu_type, self._kube_nodes, satisfies=satisfies)
        if job.node:  # the scheduler chose the node: hold the pod to it, so our accounting stays true
            return Placement(
                {**placement.node_selector, "kubernetes.io/hostname": job.node}, placement.tolerations
            )
        return placement

    async def launch(self, job: JobRecord) -> None:
        assert self.client is not None
        self.log_path(job.job_id).parent.mkdir(parents=True, exist_ok=True)
        manifest = job_manifest(job, self.template, self._placement(job))
        try:
            created = (await self.client.create(codecs.from_dict(manifest))).to_dict()
        except ApiError as exc:
            if exc.status.code != 409:
                raise LaunchError(f"the cluster refused the Job: {exc.status.message}") from exc
            created = (await self.client.get(Job, job_name(job.job_id))).to_dict()  # made before a restart
            if created["metadata"].get("labels", {}).get("gpujobs.io/job-id") != job.job_id:
                raise LaunchError(f"a Job named {job_name(job.job_id)} exists and is not this job's") from exc
        configmap = script_configmap(job, self.template)
        if configmap is not None:
            with contextlib.suppress(ApiError):
                await self.client.create(codecs.from_dict(owned_by(configmap, created)))
        self._watched[job.job_id] = job.status

    # --- watching our jobs ------------------------------------------------------------------------

    def _our_pods(self, job_id: str) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self._pods.values()
            if p["metadata"].get("labels", {}).get("gpujobs.io/job-id") == job_id and _is_ours(p)
        ]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    async def _poll_jobs(self) -> None:
        while True:
            try:
                for job_id in list(self._watched):
                    await self._check(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubernetes executor: checking jobs failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _check(self, job_id: str) -> None:
        assert self.client is not None
        try:
            kube_job = (await self.client.get(Job, job_name(job_id))).to_dict()
        except ApiError as exc:
            if exc.status.code == 404:
                self._watched.pop(job_id, None)
                await self._emit(
                    JobEvent(
                        job_id,
                        JobStatus.FAILED,
                        reason="Lost",
                        message="its Kubernetes Job was deleted outside gpujobs",
                    )
                )
            return
        pods = self._our_pods(job_id)
        if pods and job_id not in self._followers:
            self._followers[job_id] = asyncio.create_task(self._follow_logs(job_id))
        state = self._watched.get(job_id)
        running = any(p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods)
        if state is JobStatus.PENDING and running:
            self._watched[job_id] = JobStatus.RUNNING
            await self._emit(JobEvent(job_id, JobStatus.RUNNING, attempts=len(pods)))
        elif state is JobStatus.PENDING:
            await self._report_waiting(job_id, pods)
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []) or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in (
                    "ImagePullBackOff",
                    "ErrImagePull",
                    "CreateContainerConfigError",
                    "InvalidImageName",
                ):
                    await self._end(
                        job_id, JobStatus.FAILED, waiting["reason"], waiting.get("message"), None, len(pods)
                    )
                    await self._delete(job_id)
                    return
        conditions = {
            c["type"]: c
            for c in kube_job.get("status", {}).get("conditions", []) or []
            if c.get("status") == "True"
        }
        if "Complete" in conditions:
            await self._end(job_id, JobStatus.COMPLETED, None, None, 0, len(pods))
        elif "Failed" in conditions:
            reason, message, code = self._failure(conditions["Failed"], pods)
            await self._end(job_id, JobStatus.FAILED, reason, message, code, len(pods))

    async def _report_waiting(self, job_id: str, pods: Sequence[dict[str, Any]]) -> None:
        """Tell the user why the cluster has not started the pod yet (the scheduler's own words)."""
        for pod in pods:
            for condition in pod.get("status", {}).get("conditions", []) or []:
                if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                    message = f"waiting in the cluster: {condition.get('message') or condition.get('reason')}"
                    if self._messages.get(job_id) != message:
                        self._messages[job_id] = message
                        await self._emit(JobEvent(job_id, JobStatus.PENDING, message=message))
                    return

    @staticmethod
    def _failure(condition: dict[str, Any], pods: Sequence[dict[str, Any]]) -> tuple[str, str, int | None]:
        if condition.get("reason") == "DeadlineExceeded":
            return "Timeout", "killed after its timeout", None
        for pod in reversed(pods):
            for status in pod.get("status", {}).get("containerStatuses", []) or []:
                terminated = (status.get("state") or {}).get("terminated")
                if terminated:
                    code = terminated.get("exitCode")
                    if terminated.get("reason") == "OOMKilled":
                        return "OOMKilled", "killed for using more than its memory limit", code
                    return "NonZeroExit", f"exited with code {code}", code
        return condition.get("reason") or "Failed", condition.get("message") or "the Job failed", None

    async def _end(
        self,
        job_id: str,
        status: JobStatus,
        reason: str | None,
        message: str | None,
        exit_code: int | None,
        attempts: int,
    ) -> None:
        self._watched.pop(job_id, None)
        self._messages.pop(job_id, None)
        follower = self._followers.pop(job_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
        await self._archive_logs(job_id)
        await self._emit(
            JobEvent(
                job_id,
                status,
                reason=reason,
                message=message,
                exit_code=exit_code,
                attempts=attempts,
                at=datetime.now(timezone.utc),
            )
        )

    async def _archive_logs(self, job_id: str) -> None:
        """Write every attempt's whole output to the job's log file, before the Job's TTL removes it."""
        assert self.client is not None
        pods = [
            p.to_dict()
            async for p in self.client.list(
                Pod, namespace=self.namespace, labels={"gpujobs.io/job-id": job_id}
            )
        ]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        parts = []
        for pod in pods:
            with contextlib.suppress(ApiError):
                parts.append(
                    "".join(
                        [
                            line
                            async for line in self.client.log(
                                pod["metadata"]["name"], namespace=self.namespace
                            )
                        ]
                    )
                )
        if parts:
            self.log_path(job_id).write_text("".join(parts), encoding="utf-8")

    async def _follow_logs(self, job_id: str) -> None:
        """Append every attempt's output to the job's log file, as it is written."""
        assert self.client is not None
        followed: set[str] = set()
        path = self.log_path(job_id)
        while True:
            pending = [
                p
                for p in self._our_pods(job_id)
                if p["metadata"]["uid"] not in followed
                and p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed")
            ]
            if not pending:
                if job_id not in self._watched:
                    return
                await asyncio.sleep(POLL_SECONDS)
                continue
            pod = pending[0]
            followed.add(pod["metadata"]["uid"])
            with contextlib.suppress(ApiError), open(path, "a", encoding="utf-8") as handle:
                async for line in self.client.log(
                    pod["metadata"]["name"], namespace=self.namespace, follow=True
                ):
                    handle.write(line)
                    handle.flush()

    # --- cancelling and recovering --------------------------------------------------------------

    async def _delete(self, job_id: str) -> None:
        assert self.client is not None
        with contextlib.suppress(ApiError):
            await self.client.delete(
                Job, job_name(job_id), namespace=self.namespace, cascade=CascadeType.BACKGROUND
            )

    async def cancel(self, job: JobRecord) -> None:
        self._watched.pop(job.job_id, None)
        await self._delete(job.job_id)

    async def recover(self, active_jobs: Sequence[JobRecord]) -> None:
        assert self.client is not None
        existing = {
            item.to_dict()["metadata"].get("labels", {}).get("gpujobs.io/job-id")
            async for item in self.client.list(Job, labels=dict(MANAGED_BY))
        }
        for job in active_jobs:
            if job.job_id in existing:
                self.log_path(job.job_id).unlink(missing_ok=True)  # rewritten from the pods' full logs
                self._watched[job.job_id] = job.status
            elif job.status is JobStatus.PENDING:
                await self._emit(JobEvent(job.job_id, JobStatus.QUEUED, message="requeued after a restart"))
            else:
                await self._emit(
                    JobEvent(
                        job.job_id,
                        JobStatus.FAILED,
                        reason="Lost",
                        message="its Kubernetes Job was gone after a restart",
                    )
                )

    async def stop(self) -> None:
        for task in [*self._tasks, *self._followers.values()]:
            task.cancel()
        for task in [*self._tasks, *self._followers.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.client is not None:
            await self.client.close()

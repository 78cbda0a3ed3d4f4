"""The Kubernetes executor: jobs as batch/v1 Jobs, GPUs from the cluster's nodes.

- Inventory and state: nodes, pods (all namespaces) and gpujobs' own Jobs are listed once, in pages,
  and then *watched* (resume from the last resourceVersion; 410 Gone → list again; dropped connections
  → retry with backoff) into a ``ClusterCache``: ``inventory()`` and ``gpu-status`` answer from memory,
  and following a thousand running jobs costs the API server no request.
- Namespaces: one for every job (``kube_namespace``) or one per user (``kube_namespace_template``),
  created with Pod Security *restricted* when ``kube_create_namespaces`` says so.
- Launch: the Job is named from the job id (creating it twice finds the first: 409 → adopt), pinned to
  the node the scheduler chose, with the script ConfigMap owned by the Job.
- State: from the Job's conditions and its pods (Running; Complete; DeadlineExceeded → Timeout;
  failures with the pod's reason: OOMKilled, Evicted, exit codes, ImagePullBackOff).
- Logs: each pod's output is followed into ``<data_dir>/jobs/<id>/output.log``, so it outlives the
  Job's TTL and the service's log routes work unchanged.
- Observing is reading the cache (no API call): a Job that is gone while its pods still run is still
  running (a cancelled job's GPUs are free only once its pods are gone); a Job that is gone with
  nothing left of it, for a job that is not over, is ``Lost`` — it may have run, so it is never
  started again (at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
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
from ..base import ABSENT, STARTING, Executor, LaunchError, Observation, Phase
from .cache import JOB_ID_LABEL, ClusterCache, PodUsage, is_ours, pod_usage
from .manifests import (
    MANAGED_BY,
    JobTemplate,
    Placement,
    job_manifest,
    namespace_manifest,
    owned_by,
    placement_for,
    script_configmap,
)
from .slugs import job_name, namespace_for

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25
CREATE_ATTEMPTS = 4
PASSING = (429, 500, 502, 503, 504)  # API answers worth trying again
LOST_AFTER_SECONDS = 5.0  # how long a job's Job must be missing from the watched cache to be gone
# A stopped job's Job is deleted again if its pods are still there after this long (a lost request).
DELETE_AGAIN_SECONDS = 10.0
LIST_PAGE = 500  # objects per list call: a 100,000-pod cluster is read in pages, as kubectl does
# Reasons a container waits for that will not go away by waiting: the job fails with them.
HOPELESS_WAITS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName")


def _slim_pod(pod: Pod) -> dict[str, Any]:
    """The fields of a pod that the inventory reads, without converting the whole object."""
    spec, status = pod.spec, pod.status

    def containers(items: Sequence[Any] | None) -> list[dict[str, Any]]:
        return [
            {
                "resources": {
                    "requests": dict(c.resources.requests or {}) if c.resources else {},
                    "limits": dict(c.resources.limits or {}) if c.resources else {},
                }
            }
            for c in items or ()
        ]

    return {
        "metadata": {"labels": dict(pod.metadata.labels or {}) if pod.metadata else {}},
        "spec": {
            "nodeName": spec.nodeName if spec else None,
            "containers": containers(spec.containers if spec else None),
            "initContainers": containers(spec.initContainers if spec else None),
        },
        "status": {"phase": status.phase if status else None},
    }


def _pod_entry(pod: Pod) -> tuple[str, PodUsage, dict[str, Any] | None]:
    """(uid, usage, the whole pod when it is one of ours)."""
    uid = str(pod.metadata.uid if pod.metadata else "")
    labels = (pod.metadata.labels if pod.metadata else None) or {}
    if is_ours(labels):
        whole = pod.to_dict()
        return uid, pod_usage(whole), whole
    return uid, pod_usage(_slim_pod(pod)), None


class KubernetesExecutor(Executor):
    name = "kubernetes"
    supports_pools = True

    observe_interval = POLL_SECONDS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.template = JobTemplate(
            namespace=settings.kube_namespace,
            image_cpu=settings.kube_image_cpu,
            image_gpu=settings.kube_image_gpu,
            run_as_user=settings.kube_run_as_user,
            home_claim_template=settings.kube_home_claim_template,
            user_slug_scheme=settings.kube_user_slug_scheme,
            shared_claim=settings.kube_shared_claim,
            pip_extra_args=tuple(settings.pip_extra_args),
        )
        self.cache = ClusterCache(
            aliases=settings.gpu_type_aliases, extra_types=(pool.gpu_type for pool in settings.pools)
        )
        self.client: AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._namespaces_made: set[str] = set()
        self._deleted: dict[str, float] = {}  # job id → when its Job was last deleted (stop)
        self._stop_asked: set[str] = set()  # jobs a stop was asked for (a launch in flight checks)
        self._collected: set[str] = set()  # jobs whose logs were archived: never followed again
        self._missing_since: dict[str, float] = {}  # job id → when its Job was first missing
        self._watch_trouble: dict[str, str] = {}  # kind → why its watch is down

    def namespace_of(self, username: str) -> str:
        template = self.settings.kube_namespace_template
        return namespace_for(template, username) if template else self.settings.kube_namespace

    # --- inventory ------------------------------------------------------------------------------

    async def start(self) -> None:
        config = (
            KubeConfig.from_file(self.settings.kubeconfig)
            if self.settings.kubeconfig
            else KubeConfig.from_env()
        )
        self.client = AsyncClient(config, namespace=self.settings.kube_namespace)
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        for kind in (Node, Pod, Job):
            version = await self._list(kind)
            self._tasks.append(asyncio.create_task(self._watch(kind, version)))

    @property
    def _jobs_namespace(self) -> str:
        """Where our Jobs are: the one namespace, or every namespace when each user has one."""
        return "*" if self.settings.kube_namespace_template else self.settings.kube_namespace

    async def _list(self, kind: Any) -> str:
        assert self.client is not None
        if kind is Node:
            nodes = self.client.list(Node, chunk_size=LIST_PAGE)
            self.cache.replace_nodes([node.to_dict() async for node in nodes])
            return str(nodes.resourceVersion or "")
        if kind is Job:
            jobs = self.client.list(
                Job, namespace=self._jobs_namespace, labels=dict(MANAGED_BY), chunk_size=LIST_PAGE
            )
            self.cache.replace_jobs([job.to_dict() async for job in jobs])
            return str(jobs.resourceVersion or "")
        pods = self.client.list(Pod, namespace="*", chunk_size=LIST_PAGE)
        self.cache.replace_pods([_pod_entry(pod) async for pod in pods])
        return str(pods.resourceVersion or "")

    async def _watch(self, kind: Any, version: str) -> None:
        assert self.client is not None
        delay = 0.5
        while True:
            try:
                since = version or None
                stream: Any = (
                    self.client.watch(Pod, namespace="*", resource_version=since)
                    if kind is Pod
                    else self.client.watch(
                        Job, namespace=self._jobs_namespace, labels=dict(MANAGED_BY), resource_version=since
                    )
                    if kind is Job
                    else self.client.watch(Node, resource_version=since)
                )
                async for change, item in stream:
                    self._watch_trouble.pop(kind.__name__, None)
                    version = (item.metadata.resourceVersion if item.metadata else None) or version
                    if isinstance(item, Pod):
                        self.cache.pod_event(change, *_pod_entry(item))
                    elif isinstance(item, Job):
                        self.cache.job_event(change, item.to_dict())
                    else:
                        self.cache.node_event(change, item.to_dict())
                    if not isinstance(item, Node):
                        self.wake()
                    delay = 0.5
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status.code == 410:  # history gone: start again from a fresh list
                    log.info("watch of %s: history compacted, listing again", kind.__name__)
                    with contextlib.suppress(Exception):
                        version = await self._list(kind)
                        self._watch_trouble.pop(kind.__name__, None)
                        continue
                else:
                    log.warning("watch of %s failed: %s", kind.__name__, exc)
                    self._watch_trouble[kind.__name__] = f"watch of {kind.__name__}s: {exc.status.message}"
            except Exception as exc:
                log.warning("watch of %s dropped (%s); retrying in %.1f s", kind.__name__, exc, delay)
                self._watch_trouble[kind.__name__] = f"watch of {kind.__name__}s: {exc.__class__.__name__}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def inventory(self) -> Inventory:
        return self.cache.inventory()

    def problem(self) -> str | None:
        # A watch that reconnects quickly is normal; one that stays down is worth saying.
        return "; ".join(sorted(self._watch_trouble.values())) or None

    def external_holds(self) -> Mapping[str, Mapping[str, int]]:
        return self.cache.held_by_others()

    # --- launching ------------------------------------------------------------------------------

    def log_path(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id / "output.log"

    def _placement(self, job: JobRecord) -> Placement:
        placement = placement_for(job.gpu_type, self.cache.kube_nodes(), satisfies=satisfies)
        if job.node:  # the scheduler chose the node: hold the pod to it, so our accounting stays true
            return Placement(
                {**placement.node_selector, "kubernetes.io/hostname": job.node}, placement.tolerations
            )
        return placement

    async def _ensure_namespace(self, namespace: str, username: str) -> None:
        assert self.client is not None
        if namespace in self._namespaces_made:
            return
        try:
            await self.client.create(codecs.from_dict(namespace_manifest(namespace, username)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise LaunchError(f"could not create namespace {namespace}: {exc.status.message}") from exc
        self._namespaces_made.add(namespace)

    async def launch(self, job: JobRecord) -> None:
        assert self.client is not None
        self.log_path(job.job_id).parent.mkdir(parents=True, exist_ok=True)
        namespace = self.namespace_of(job.user)
        if self.settings.kube_create_namespaces:
            await self._ensure_namespace(namespace, job.user)
        template = dataclasses.replace(self.template, namespace=namespace)
        manifest = job_manifest(job, template, self._placement(job))
        try:
            created = await self._create_job(manifest)
            self.cache.job_event("ADDED", created)  # the watch will say so too, a moment later
        except ApiError as exc:
            if exc.status.code in PASSING:
                raise  # the reconciler tries again, with backoff (a repeat adopts what landed)
            if exc.status.code != 409:
                raise LaunchError(f"the cluster refused the Job: {exc.status.message}") from exc
            # Already made (a create whose answer was lost): adopt it, once the watch shows it is ours.
            found = await self._our_job_soon(job.job_id)
            if found is None:
                raise LaunchError(f"a Job named {job_name(job.job_id)} exists and is not this job's") from exc
            created = dict(found)
        configmap = script_configmap(job, template)
        if configmap is not None:
            try:
                await self.client.create(codecs.from_dict(owned_by(configmap, created)))
            except ApiError as exc:
                if exc.status.code != 409:  # 409: made by an earlier try of this launch
                    raise  # passing: the launch is tried again, and adopts the Job it made
        if job.job_id in self._stop_asked:  # stopped while this launch was in flight: never let it run
            await self._delete(job.job_id, namespace)

    async def _create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Job, trying again when the API server has a passing problem (5xx, 429, a dropped
        connection): the name is the job's, so a retry after a create that did land answers 409."""
        assert self.client is not None
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return (await self.client.create(codecs.from_dict(manifest))).to_dict()
            except ApiError as exc:
                if exc.status.code not in PASSING or attempt == CREATE_ATTEMPTS - 1:
                    raise
            except httpx.TransportError:
                if attempt == CREATE_ATTEMPTS - 1:
                    raise  # the create may have landed: passing, and a repeat adopts it
            await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _our_job_soon(self, job_id: str, seconds: float = 5.0) -> Mapping[str, Any] | None:
        """Our Job for ``job_id`` from the watched cache, waiting a little for the watch to bring it."""
        deadline = asyncio.get_running_loop().time() + seconds
        while (found := self.cache.job(job_id)) is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        return found

    # --- observing our jobs -----------------------------------------------------------------------

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        seen = {}
        for job in jobs:
            seen[job.job_id] = self._observe(job)
        return seen

    def _observe(self, job: JobRecord) -> Observation:
        pods = self.cache.pods_of(job.job_id)
        kube_job = self.cache.job(job.job_id)
        # Pods that have not ended hold their node's GPUs, whatever the Job says (a Job is Failed at
        # its deadline while its pod is still being killed; a deleted Job's pods take time to go).
        live = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        if job.status.is_terminal():  # ended in the store: only whether anything still runs matters
            return Observation(Phase.RUNNING) if live else ABSENT
        if kube_job is None:
            self._stop_following(job.job_id)
            if live:
                return Observation(Phase.RUNNING)
            # The watch may lag behind a Job just made, or a relist may briefly miss it: only a Job
            # missing for a while is gone.
            now = asyncio.get_running_loop().time()
            if now - self._missing_since.setdefault(job.job_id, now) < LOST_AFTER_SECONDS:
                return STARTING
            return Observation.lost("its Kubernetes Job was deleted outside gpujobs")
        self._missing_since.pop(job.job_id, None)
        started = any(p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods)
        if started and job.job_id not in self._followers and job.job_id not in self._collected:
            # What was followed before (by this process, or before a restart) stays: a log is never
            # deleted before its job's end is stored.  The new follower goes on from there.
            path = self.log_path(job.job_id)
            self._follow(job.job_id, skip=path.stat().st_size if path.exists() else 0)
        outcome = _outcome(kube_job, pods)
        if outcome is not None:
            return dataclasses.replace(outcome, settled=not live)
        if started:
            return Observation(Phase.RUNNING, message=_retry_message(pods), attempts=len(pods))
        why_waiting = _waiting_message(pods)
        return Observation(Phase.STARTING, message=why_waiting) if why_waiting else STARTING

    def _follow(self, job_id: str, skip: int = 0) -> None:
        follower = asyncio.create_task(self._follow_logs(job_id, skip), name=f"gpujobs-logs-{job_id}")
        self._followers[job_id] = follower

        def done(task: asyncio.Task[None]) -> None:
            if self._followers.get(job_id) is task:  # it failed: the next observation starts another
                del self._followers[job_id]
            if not task.cancelled() and task.exception() is not None:
                log.warning("following the logs of %s failed: %s", job_id, task.exception())

        follower.add_done_callback(done)

    def _stop_following(self, job_id: str) -> None:
        follower = self._followers.pop(job_id, None)
        if follower is not None:
            follower.cancel()

    def _forget(self, job_id: str) -> None:
        """Nothing of the job is left: drop what this executor kept about it."""
        self._stop_following(job_id)
        for kept in (self._stop_asked, self._collected):
            kept.discard(job_id)
        self._deleted.pop(job_id, None)
        self._missing_since.pop(job_id, None)

    async def collect(self, job: JobRecord) -> None:
        """Before an end is recorded: the log file gets every attempt's whole output, and a Job that will
        not end by itself (a hopeless wait) is deleted."""
        self._collected.add(job.job_id)  # no new follower: the archive below has the whole output
        follower = self._followers.pop(job.job_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
        kube_job = self.cache.job(job.job_id)
        namespace = self._namespace_of_job(job)
        await self._archive_logs(job.job_id, namespace)
        if kube_job is not None and not _finished(kube_job):
            await self._delete(job.job_id, namespace)
        if job.status.is_terminal():  # a release: nothing of it is left to watch
            self._forget(job.job_id)

    def _namespace_of_job(self, job: JobRecord) -> str:
        kube_job = self.cache.job(job.job_id)
        if kube_job is not None:
            return str(kube_job["metadata"].get("namespace") or self.namespace_of(job.user))
        return self.namespace_of(job.user)

    async def _archive_logs(self, job_id: str, namespace: str) -> None:
        """Write every attempt's whole output to the job's log file, before the Job's TTL removes it."""
        assert self.client is not None
        pods = [
            p.to_dict()
            async for p in self.client.list(Pod, namespace=namespace, labels={JOB_ID_LABEL: job_id})
        ]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        parts = []
        for pod in pods:
            for container in _containers_in_order(pod):
                with contextlib.suppress(ApiError):
                    lines = self.client.log(pod["metadata"]["name"], namespace=namespace, container=container)
                    parts.append("".join([line async for line in lines]))
        if parts:
            await asyncio.to_thread(_complete_log, self.log_path(job_id), "".join(parts))

    async def _follow_logs(self, job_id: str, skip: int = 0) -> None:
        """Append every attempt's output to the job's log file, as it is written; the first ``skip``
        bytes of it are in the file already (followed before a restart)."""
        assert self.client is not None
        followed: set[str] = set()
        path = self.log_path(job_id)

        def write(handle: TextIO, line: str) -> None:
            nonlocal skip
            if skip > 0:
                data = line.encode()
                if len(data) <= skip:
                    skip -= len(data)
                    return
                line, skip = data[skip:].decode("utf-8", errors="replace"), 0
            handle.write(line)

        while True:
            pending = [
                p
                for p in self.cache.pods_of(job_id)
                if p["metadata"]["uid"] not in followed
                and p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed")
            ]
            if not pending:
                await asyncio.sleep(POLL_SECONDS)  # until collect() ends this task
                continue
            pod = pending[0]
            followed.add(pod["metadata"]["uid"])
            name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
            *init, main = _containers_in_order(pod)
            with contextlib.suppress(ApiError), open(path, "a", encoding="utf-8") as handle:
                for container in init:  # finished before the pod ran: their whole output at once
                    async for line in self.client.log(name, namespace=namespace, container=container):
                        write(handle, line)
                handle.flush()
                async for line in self.client.log(name, namespace=namespace, container=main, follow=True):
                    write(handle, line)
                    handle.flush()

    # --- stopping --------------------------------------------------------------

    async def _delete(self, job_id: str, namespace: str) -> None:
        assert self.client is not None
        with contextlib.suppress(ApiError):
            await self.client.delete(
                Job, job_name(job_id), namespace=namespace, cascade=CascadeType.BACKGROUND
            )

    async def stop(self, job: JobRecord) -> None:
        """Delete the Job (its pods get SIGTERM, then SIGKILL after their grace period); asked again on
        every pass until the pods are gone, but sent again only now and then."""
        self._stop_asked.add(job.job_id)
        now = asyncio.get_running_loop().time()
        last = self._deleted.get(job.job_id)
        if last is not None and now - last < DELETE_AGAIN_SECONDS:
            return
        self._deleted[job.job_id] = now
        await self._delete(job.job_id, self._namespace_of_job(job))

    async def close(self) -> None:
        for task in [*self._tasks, *self._followers.values()]:
            task.cancel()
        for task in [*self._tasks, *self._followers.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.client is not None:
            await self.client.close()


# --- reading pods: pure ---------------------------------------------------------------------------------


def _waiting_message(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the cluster has not started the pod yet, in its scheduler's own words."""
    for pod in pods:
        for condition in pod.get("status", {}).get("conditions", []) or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return f"waiting in the cluster: {condition.get('message') or condition.get('reason')}"
    return None


def _retry_message(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """What ended the previous attempt, now that the Job has started another."""
    if len(pods) < 2:
        return None
    previous = pods[-2].get("status", {})
    why = previous.get("reason") or "it failed"
    if previous.get("message"):
        why = f"{why}: {previous['message']}"
    return f"attempt {len(pods)} started; attempt {len(pods) - 1} ended ({why})"


def _containers_in_order(pod: Mapping[str, Any]) -> list[str]:
    """The containers whose output makes the job's log: init containers (pip's output says why
    requirements failed), then the job's own."""
    spec = pod.get("spec", {})
    return [c["name"] for c in spec.get("initContainers", []) or []] + [spec["containers"][0]["name"]]


def _complete_log(path: Path, whole: str) -> None:
    """Make the log file hold ``whole``: append what following missed (live readers keep reading), or
    rewrite it when what was followed differs (a restart, a lost stream)."""
    followed = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if whole.startswith(followed):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(whole[len(followed) :])
    else:
        partial = path.with_suffix(".partial")
        partial.write_text(whole, encoding="utf-8")
        partial.replace(path)


def _outcome(kube_job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Observation | None:
    """How the Job ended (or that its pods wait for something that will not come), or None."""
    hopeless = _hopeless_wait(pods)
    if hopeless is not None:
        return Observation(
            Phase.ENDED, JobStatus.FAILED, reason=hopeless[0], message=hopeless[1], attempts=len(pods)
        )
    conditions = {
        c["type"]: c
        for c in kube_job.get("status", {}).get("conditions", []) or []
        if c.get("status") == "True"
    }
    if "Complete" in conditions:
        return Observation(Phase.ENDED, JobStatus.COMPLETED, exit_code=0, attempts=len(pods))
    if "Failed" in conditions:
        reason, message, code = job_failure(conditions["Failed"], pods)
        return Observation(
            Phase.ENDED, JobStatus.FAILED, reason=reason, message=message, exit_code=code, attempts=len(pods)
        )
    return None


def _finished(kube_job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in kube_job.get("status", {}).get("conditions", []) or []
    )


def _hopeless_wait(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str | None] | None:
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in HOPELESS_WAITS:
                return waiting["reason"], waiting.get("message")
    return None


def job_failure(
    condition: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> tuple[str, str, int | None]:
    """(reason, message, exit code) of a failed Job, from its Failed condition and its last pod."""
    if condition.get("reason") == "DeadlineExceeded":
        return "Timeout", "killed after its timeout", None
    for pod in reversed(pods):
        status = pod.get("status", {})
        if status.get("reason") == "Evicted":
            return "Evicted", status.get("message") or "the node evicted the pod", None
        for container in status.get("initContainerStatuses", []) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode"):
                code = terminated["exitCode"]
                return "RequirementsFailed", f"installing the requirements failed (exit code {code})", None
        for container in status.get("containerStatuses", []) or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                code = terminated.get("exitCode")
                if terminated.get("reason") == "OOMKilled":
                    return "OOMKilled", "killed for using more than its memory limit", code
                return "NonZeroExit", f"exited with code {code}", code
    return condition.get("reason") or "Failed", condition.get("message") or "the Job failed", None

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
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO, TypeVar

from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.core.selector import build_selector
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, Node, Pod
from lightkube.types import CascadeType

from ...config import Settings
from ...gputypes import satisfies
from ...inventory import Inventory
from ...models import JobStatus
from ...store.records import JobRecord
from ..base import ABSENT, STARTING, Executor, LaunchError, Observation, Phase, Unreachable, ViewState
from .cache import JOB_ID_LABEL, ClusterCache, PodUsage, is_ours, pod_usage
from .faults import Fault, Verdict, classify, is_client_error
from .freshness import Freshness
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
T = TypeVar("T")
POLL_SECONDS = 0.25
# A broken watch is listed and watched again after 0.5 s, then twice as long each time, at most 5 s
# apart: an API server that answers again is in sync within seconds.
WATCH_RETRY_FIRST, WATCH_RETRY_LONGEST = 0.5, 5.0
WATCHED = (Node, Pod, Job)
LOST_AFTER_SECONDS = 5.0  # how long a job's Job must be missing from the watched cache to be gone
# A failed Job whose pods the cache still shows running: the pods' watch lags behind the Jobs' (two
# streams), and the pods' last states say why it failed.  Waited for this long, then the end is recorded
# with what is known (a pod on a lost node may never report).
POD_LAG_SECONDS = 5.0
# How long a finished job's output is fetched again when the cluster does not give it, before its end
# is recorded without it (the log then says what is missing).
ARCHIVE_PATIENCE_SECONDS = 60.0
# How much of the end of a followed log is looked for in the cluster's copy to find where it goes on.
LOG_ANCHOR_SIZES = (4096, 1024, 256, 64)
# A pod stuck being created: its events are read at most this often.
STUCK_CHECK_SECONDS = 5.0
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
        self._failed_unexplained_since: dict[str, float] = {}  # job id → when its Job failed, pods live
        self._archive_trouble: dict[str, float] = {}  # job id → when fetching its output first failed
        self._archive_given_up: set[str] = set()  # jobs whose log says what could not be fetched
        self._follow_trouble: dict[str, tuple[int, float]] = {}  # job id → (failures, next try at)
        self._stuck_checked: dict[str, tuple[float, Observation]] = {}  # job id → (when, what it said)
        self.freshness = Freshness(settings.kube_silence_seconds, (kind.__name__ for kind in WATCHED))

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
        self.client = AsyncClient(
            config,
            namespace=self.settings.kube_namespace,
            timeout=self.settings.kube_request_timeout_seconds,  # type: ignore[arg-type]  # a number will do
        )
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        for kind in WATCHED:
            version: str | None = None
            try:
                version = await self._list(kind)
            except Exception as exc:
                fault = _fault_of(exc)
                if not fault.passing:  # RBAC, a bad kubeconfig: no use starting
                    raise RuntimeError(f"cannot list {kind.__name__}s: {fault.message}") from exc
                # The API server is down: start anyway, with a stale view, and list once it answers.
                log.warning("cannot list %ss yet (%s): the view is stale until then", kind.__name__, fault)
                self.freshness.lost(kind.__name__, time.monotonic(), fault.message)
            self._tasks.append(asyncio.create_task(self._watch(kind, version), name=f"gpujobs-watch-{kind}"))

    @property
    def _jobs_namespace(self) -> str:
        """Where our Jobs are: the one namespace, or every namespace when each user has one."""
        return "*" if self.settings.kube_namespace_template else self.settings.kube_namespace

    async def _list(self, kind: Any) -> str:
        """List every object of ``kind`` into the cache (in pages); the list's resourceVersion."""
        assert self.client is not None
        if kind is Node:
            nodes = self.client.list(Node, chunk_size=LIST_PAGE)
            self.cache.replace_nodes([node.to_dict() async for node in nodes])
            version = str(nodes.resourceVersion or "")
        elif kind is Job:
            jobs = self.client.list(
                Job, namespace=self._jobs_namespace, labels=dict(MANAGED_BY), chunk_size=LIST_PAGE
            )
            self.cache.replace_jobs([job.to_dict() async for job in jobs])
            version = str(jobs.resourceVersion or "")
        else:
            pods = self.client.list(Pod, namespace="*", chunk_size=LIST_PAGE)
            self.cache.replace_pods([_pod_entry(pod) async for pod in pods])
            version = str(pods.resourceVersion or "")
        self.freshness.heard(kind.__name__, time.monotonic(), time.time(), synced=True)
        return version

    def _open_watch(self, kind: Any, version: str) -> AsyncIterator[tuple[str, Any]]:
        """A watch from ``version`` that asks for bookmarks and for the server to end it now and then
        (lightkube reopens it from the last version it saw).  Built with lightkube's request builder:
        its ``watch()`` has no way to ask for bookmarks."""
        assert self.client is not None
        generic = self.client._client
        namespace = "*" if kind is Pod else self._jobs_namespace if kind is Job else None
        request = generic.prepare_request(
            "list",
            res=kind,
            namespace=namespace,
            watch=True,
            params={
                "timeoutSeconds": self.settings.kube_watch_timeout_seconds,
                "resourceVersion": version or None,
                "allowWatchBookmarks": "true",
                "labelSelector": build_selector(dict(MANAGED_BY)) if kind is Job else None,
            },
        )
        return generic.watch(request)

    async def _watch(self, kind: Any, version: str | None) -> None:
        """Keep the cache of ``kind`` current: watch from ``version``; list again (``version`` None)
        after any error — the server may have come back without the history asked for — and after a
        silence longer than ``kube_silence_seconds``."""
        name = kind.__name__
        delay = WATCH_RETRY_FIRST
        while True:
            silence = None
            try:
                if version is None:
                    version = await self._list(kind)
                    self.wake()  # a new list may show ends and starts the watch missed
                async with (
                    asyncio.timeout_at(self._silence_deadline(name)) as silence,
                    contextlib.aclosing(self._open_watch(kind, version)) as stream,  # type: ignore[type-var]
                ):
                    async for change, item in stream:
                        version = (item.metadata.resourceVersion if item.metadata else None) or version
                        self.freshness.heard(name, time.monotonic(), time.time())
                        silence.reschedule(self._silence_deadline(name))
                        delay = WATCH_RETRY_FIRST
                        if change == "BOOKMARK":
                            continue
                        if isinstance(item, Pod):
                            self.cache.pod_event(change, *_pod_entry(item))
                        elif isinstance(item, Job):
                            self.cache.job_event(change, item.to_dict())
                        else:
                            self.cache.node_event(change, item.to_dict())
                        if not isinstance(item, Node):
                            self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if silence is not None and silence.expired():
                    why = f"nothing heard for {self.settings.kube_silence_seconds:.0f} s"
                    log.warning("watch of %ss: %s; listing them again", name, why)
                    self.freshness.lost(name, time.monotonic(), why)
                    version = None
                    continue
                fault = _fault_of(exc)
                version = None
                if fault.verdict is Verdict.GONE:  # history compacted: list again (at once, the first time)
                    log.info("watch of %ss: history compacted, listing again", name)
                    if delay > WATCH_RETRY_FIRST:  # again, with no event between: not a hot loop
                        await asyncio.sleep(delay)
                    delay = min(delay * 2, WATCH_RETRY_LONGEST)
                    continue
                log.warning("watch of %ss failed (%s); listing again in %.1f s", name, fault.message, delay)
                self.freshness.lost(name, time.monotonic(), fault.message)
                await asyncio.sleep(max(delay, fault.retry_after or 0.0))
                delay = min(delay * 2, WATCH_RETRY_LONGEST)

    def _silence_deadline(self, kind: str) -> float | None:
        """When the watch of ``kind`` must have heard something, on the event loop's clock."""
        deadline = self.freshness.deadline(kind)
        if deadline is None:
            return None
        return asyncio.get_running_loop().time() + (deadline - time.monotonic())

    def inventory(self) -> Inventory:
        return self.cache.inventory()

    def view_state(self) -> ViewState:
        stale = self.freshness.staleness(time.monotonic())
        synced = self.freshness.synced_at()
        return ViewState(
            stale=stale is not None,
            synced_at=datetime.fromtimestamp(synced, timezone.utc) if synced is not None else None,
            reason=f"the view of the cluster is stale: {stale.reason}" if stale else None,
        )

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
        made = await _attempt(self.client.create(codecs.from_dict(namespace_manifest(namespace, username))))
        if isinstance(made, Fault) and made.verdict is not Verdict.CONFLICT:
            raise _launch_trouble(f"could not create namespace {namespace}", made)
        self._namespaces_made.add(namespace)

    async def launch(self, job: JobRecord) -> None:
        """Create the job's Job (named from its id) and its script ConfigMap.  Passing trouble raises
        ``Unreachable`` (the reconciler tries again: a Job that did land answers 409 and is adopted);
        a refusal raises ``LaunchError`` with the API server's words."""
        assert self.client is not None
        if not self.freshness.listed("Node"):  # placement needs the nodes' labels and taints
            raise Unreachable("the cluster's nodes have not been listed yet")
        self.log_path(job.job_id).parent.mkdir(parents=True, exist_ok=True)
        namespace = self.namespace_of(job.user)
        if self.settings.kube_create_namespaces:
            await self._ensure_namespace(namespace, job.user)
        template = dataclasses.replace(self.template, namespace=namespace)
        manifest = job_manifest(job, template, self._placement(job))
        made = await _attempt(self.client.create(codecs.from_dict(manifest)))
        if isinstance(made, Fault):
            if made.verdict is Verdict.NOT_FOUND and self.settings.kube_create_namespaces:
                self._namespaces_made.discard(namespace)  # deleted since it was made: made again next try
                raise Unreachable(f"namespace {namespace} is gone; making it again")
            if made.verdict is not Verdict.CONFLICT:
                raise _launch_trouble("the cluster did not take the Job", made)
            # Already there (a create whose answer was lost, a launch repeated after a restart): adopt it
            # if it is this job's.
            found = await _attempt(self.client.get(Job, job_name(job.job_id), namespace=namespace))
            if isinstance(found, Fault):
                if found.verdict is Verdict.NOT_FOUND:
                    # It was made (the 409 says so) and is gone since: it may have run, so it is not made
                    # again.  Without it, observing ends the job as Lost.
                    log.warning("job %s: its Job was made and deleted before it could be adopted", job.job_id)
                    return
                raise _launch_trouble("could not read the Job that is in the way", found)
            labels = (found.metadata.labels if found.metadata else None) or {}
            if labels.get(JOB_ID_LABEL) != job.job_id:
                raise LaunchError(f"a Job named {job_name(job.job_id)} exists and is not this job's")
            created = found.to_dict()
        else:
            created = made.to_dict()
        # Not put in the cache: the watch brings it (a deletion it already saw must not be undone), and
        # a Job missing from the cache is read from the API server before it is called lost.
        configmap = script_configmap(job, template)
        if configmap is not None:
            stored = await _attempt(self.client.create(codecs.from_dict(owned_by(configmap, created))))
            if isinstance(stored, Fault) and stored.verdict is not Verdict.CONFLICT:  # 409: made before
                # Passing: the launch is tried again and adopts the Job; refused: the job fails, and its
                # Job (waiting for a script that will not come) is deleted with it.
                raise _launch_trouble("could not store the job's script in a ConfigMap", stored)
        if job.job_id in self._stop_asked:  # stopped while this launch was in flight: never let it run
            await self._delete(job.job_id, namespace)

    # --- observing our jobs -----------------------------------------------------------------------

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        stale = self.view_state().stale
        now = datetime.now(timezone.utc)
        seen = {}
        for job in jobs:
            found = self._observe(job, stale, now)
            if isinstance(found, _StuckCreating):
                found = await self._stuck_outcome(job, found)
            elif isinstance(found, _MaybeLost):
                found = await self._lost_or_not(job)
            if found is not None:
                seen[job.job_id] = found
        return seen

    def _observe(self, job: JobRecord, stale: bool, now: datetime) -> Observation | _Check | None:
        """What the cache says of ``job``; a ``_Check`` where the API server must be asked first; None
        where a stale view cannot tell."""
        pods = self.cache.pods_of(job.job_id)
        kube_job = self.cache.job(job.job_id)
        # Pods that have not ended hold their node's GPUs, whatever the Job says (a Job is Failed at
        # its deadline while its pod is still being killed; a deleted Job's pods take time to go).
        live = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        if job.status.is_terminal():  # ended in the store: only whether anything still runs matters
            if live:
                return Observation(Phase.RUNNING)
            return None if stale else ABSENT  # a stale view does not prove that nothing runs
        if kube_job is None:
            self._stop_following(job.job_id)
            if live:
                return Observation(Phase.RUNNING)
            if stale:  # a stale view proves nothing missing: ask again once it is in sync
                self._missing_since.pop(job.job_id, None)
                return None
            # The watch may lag behind a Job just made, or a relist may briefly miss it: only a Job
            # missing for a while, and then not found by the API server either, is gone.
            moment = asyncio.get_running_loop().time()
            if moment - self._missing_since.setdefault(job.job_id, moment) < LOST_AFTER_SECONDS:
                return STARTING
            return _MaybeLost()
        self._missing_since.pop(job.job_id, None)
        started = any(p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods)
        if started and job.job_id not in self._followers and job.job_id not in self._collected:
            self._follow_again(job.job_id)
        outcome = _outcome(kube_job, pods)
        pods_lag = live and _pods_must_explain(kube_job)
        if outcome is not None and pods_lag and not self._waited_for_pods(job.job_id):
            outcome = None  # the pods' last states are on their way: seen as they are until then
        if outcome is not None:
            return dataclasses.replace(outcome, settled=not live)
        if started:
            return Observation(Phase.RUNNING, message=_retry_message(pods), attempts=len(pods))
        stuck = _stuck_creating(pods, now, self.settings.kube_container_creating_seconds)
        if stuck is not None and not stale:  # a stale view may show a pod that has started since
            return _StuckCreating(stuck, attempts=len(pods))
        why_waiting = _waiting_message(pods)
        return Observation(Phase.STARTING, message=why_waiting) if why_waiting else STARTING

    def _waited_for_pods(self, job_id: str) -> bool:
        """Whether a failed Job's live pods have been waited for long enough (see POD_LAG_SECONDS)."""
        moment = asyncio.get_running_loop().time()
        return moment - self._failed_unexplained_since.setdefault(job_id, moment) >= POD_LAG_SECONDS

    async def _lost_or_not(self, job: JobRecord) -> Observation | None:
        """A Job missing from the cache for a while: lost if the API server does not have it either
        (a watch that stalled after a relist may not have brought it yet)."""
        assert self.client is not None
        found = await _attempt(
            self.client.get(Job, job_name(job.job_id), namespace=self.namespace_of(job.user))
        )
        if isinstance(found, Fault):
            if found.verdict is not Verdict.NOT_FOUND:
                return None  # cannot tell now
            return Observation.lost(
                "its Kubernetes Job is gone (deleted outside gpujobs, or lost with the cluster's state); "
                "it may have run, so it is not started again"
            )
        self._missing_since.pop(job.job_id, None)
        return STARTING  # there after all: the watch will bring it

    async def _stuck_outcome(self, job: JobRecord, stuck: _StuckCreating) -> Observation:
        """A job whose pod has been waiting to be created for too long fails, in the cluster's own words
        (its last warning about the pod) — unless the kubelet's last word is progress (an image being
        pulled): then it waits on, and says so.  The pod's events are read at most every few seconds."""
        assert self.client is not None
        moment = asyncio.get_running_loop().time()
        checked = self._stuck_checked.get(job.job_id)
        if checked is not None and moment - checked[0] < STUCK_CHECK_SECONDS:
            return checked[1]
        metadata = stuck.pod["metadata"]
        events = await _attempt(
            _listed(
                self.client.list(
                    Event, namespace=metadata["namespace"], fields={"involvedObject.name": metadata["name"]}
                )
            )
        )
        newest = None if isinstance(events, Fault) else _newest_event(events)
        if newest is not None and newest.get("type") != "Warning":
            seen = Observation(Phase.STARTING, message=f"its pod is being created: {_event_text(newest)}")
        else:
            limit = self.settings.kube_container_creating_seconds
            message = f"its pod was still being created after {limit:.0f} s"
            if newest is not None:
                message = f"{message}: {_event_text(newest)}"
            seen = Observation(
                Phase.ENDED,
                JobStatus.FAILED,
                reason="ContainerCreatingTimeout",
                message=message,
                attempts=stuck.attempts,
                settled=False,  # its pod is there until the Job is deleted (collect does)
            )
        self._stuck_checked[job.job_id] = (moment, seen)
        return seen

    def _follow_again(self, job_id: str) -> None:
        """Follow the job's output, going on from what the log file has (followed before by this
        process, or before a restart: a log is never deleted before its job's end is stored).  After
        a follower failed, the next starts only after a pause that doubles (0.5 s … 30 s)."""
        trouble = self._follow_trouble.get(job_id)
        if trouble is not None and asyncio.get_running_loop().time() < trouble[1]:
            return
        path = self.log_path(job_id)
        self._follow(job_id, skip=path.stat().st_size if path.exists() else 0)

    def _follow(self, job_id: str, skip: int = 0) -> None:
        follower = asyncio.create_task(self._follow_logs(job_id, skip), name=f"gpujobs-logs-{job_id}")
        self._followers[job_id] = follower

        def done(task: asyncio.Task[None]) -> None:
            if self._followers.get(job_id) is task:  # it failed: a later observation starts another
                del self._followers[job_id]
            if not task.cancelled() and task.exception() is not None:
                failures = (self._follow_trouble.get(job_id) or (0, 0.0))[0] + 1
                pause = min(30.0, 0.5 * 2 ** (failures - 1))
                self._follow_trouble[job_id] = (failures, asyncio.get_running_loop().time() + pause)
                if failures == 1:
                    log.warning("following the logs of %s failed: %s", job_id, task.exception())
            elif not task.cancelled():
                self._follow_trouble.pop(job_id, None)

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
        for memo in (
            self._deleted,
            self._missing_since,
            self._failed_unexplained_since,
            self._archive_trouble,
            self._follow_trouble,
        ):
            memo.pop(job_id, None)
        self._stuck_checked.pop(job_id, None)
        self._archive_given_up.discard(job_id)

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
        # A Job that will not end by itself goes: one still running, and one the cache does not have
        # (lost, or made by a create whose answer never came: a 404 then is fine).
        if kube_job is None or not _finished(kube_job):
            await self._delete(job.job_id, namespace)
        if job.status.is_terminal():  # a release: nothing of it is left to watch
            self._forget(job.job_id)

    def _namespace_of_job(self, job: JobRecord) -> str:
        kube_job = self.cache.job(job.job_id)
        if kube_job is not None:
            return str(kube_job["metadata"].get("namespace") or self.namespace_of(job.user))
        return self.namespace_of(job.user)

    async def _archive_logs(self, job_id: str, namespace: str) -> None:
        """Write every attempt's whole output to the job's log file, before the Job's TTL removes it.
        Raises while the cluster does not answer (the end is recorded on a later pass, logs complete);
        after ``ARCHIVE_PATIENCE_SECONDS`` of that, the end goes ahead with what was followed and a
        line in the log that says what is missing."""
        assert self.client is not None
        if job_id in self._archive_given_up:  # the log says what is missing, once
            return
        try:
            pods = [
                p.to_dict()
                async for p in self.client.list(Pod, namespace=namespace, labels={JOB_ID_LABEL: job_id})
            ]
            pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
            parts = []
            for pod in pods:
                for container in _containers_in_order(pod):
                    if not _ran(pod, container):  # never started: the API server has no output for it
                        continue
                    lines = self.client.log(pod["metadata"]["name"], namespace=namespace, container=container)
                    text = await _attempt(_joined(lines))
                    if isinstance(text, Fault):
                        if not text.passing:  # the pod went meanwhile, or it has no output to give
                            continue
                        raise _ArchiveTrouble(text.message)
                    parts.append(text)
        except Exception as exc:
            fault = exc if isinstance(exc, _ArchiveTrouble) else _ArchiveTrouble(_fault_of(exc).message)
            now = time.monotonic()
            first = self._archive_trouble.setdefault(job_id, now)
            if now - first < ARCHIVE_PATIENCE_SECONDS:
                raise Unreachable(f"could not fetch the job's output: {fault}") from exc
            note = f"\n[gpujobs] the rest of this job's output could not be fetched from the cluster: {fault}"
            await asyncio.to_thread(_append, self.log_path(job_id), note + "\n")
            self._archive_given_up.add(job_id)
            return
        self._archive_trouble.pop(job_id, None)
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
            # Only containers that started have output (asking for another's is an error answer, which
            # lightkube turns into a RuntimeError when following).
            *init, main = _containers_in_order(pod)
            with open(path, "a", encoding="utf-8") as handle:
                for container in init:  # finished before the pod ran: their whole output at once
                    if _ran(pod, container):
                        async for line in self.client.log(name, namespace=namespace, container=container):
                            write(handle, line)
                handle.flush()
                if _ran(pod, main):
                    async for line in self.client.log(name, namespace=namespace, container=main, follow=True):
                        write(handle, line)
                        handle.flush()
            # A failure above ends this follower; a later observation starts another (after a pause),
            # from the end of the file, and the archive at the job's end adds anything missed.

    # --- stopping --------------------------------------------------------------

    async def _delete(self, job_id: str, namespace: str) -> None:
        """Delete the job's Job (and so its pods and ConfigMap); already gone is fine.  Raises
        ``Unreachable`` when the cluster did not take the request."""
        assert self.client is not None
        deleted = await _attempt(
            self.client.delete(Job, job_name(job_id), namespace=namespace, cascade=CascadeType.BACKGROUND)
        )
        if isinstance(deleted, Fault) and deleted.verdict is not Verdict.NOT_FOUND:
            raise Unreachable(f"could not delete the Job: {deleted.message}", deleted.retry_after)

    async def stop(self, job: JobRecord) -> None:
        """Delete the Job (its pods get SIGTERM, then SIGKILL after their grace period); asked again on
        every pass until the pods are gone, but sent again only now and then once it was taken."""
        self._stop_asked.add(job.job_id)
        now = asyncio.get_running_loop().time()
        last = self._deleted.get(job.job_id)
        if last is not None and now - last < DELETE_AGAIN_SECONDS:
            return
        await self._delete(job.job_id, self._namespace_of_job(job))
        self._deleted[job.job_id] = now

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


@dataclass(frozen=True)
class _StuckCreating:
    """A job whose newest pod has been waiting to be created for too long: its events say why."""

    pod: Mapping[str, Any]
    attempts: int


@dataclass(frozen=True)
class _MaybeLost:
    """A job whose Job has been missing from the cache for a while: the API server has the last word."""


_Check = _StuckCreating | _MaybeLost


async def _listed(items: AsyncIterable[Any]) -> list[dict[str, Any]]:
    return [item.to_dict() async for item in items]


def _ran(pod: Mapping[str, Any], container: str) -> bool:
    """Whether the pod's container has started (running, ended, or restarted)."""
    status = pod.get("status") or {}
    for entry in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if entry.get("name") == container:
            state = entry.get("state") or {}
            return "running" in state or "terminated" in state or bool(entry.get("lastState"))
    return False


def _newest_event(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest event: by time, and of equal times (a second's resolution) the later made (events
    are listed by name, which a kubelet makes from the pod's name and a timestamp)."""
    if not events:
        return None
    stamped = enumerate(events)
    return max(stamped, key=lambda e: (e[1].get("lastTimestamp") or e[1].get("eventTime") or "", e[0]))[1]


def _event_text(event: Mapping[str, Any]) -> str:
    return f"{event.get('reason') or event.get('type') or 'Event'}: {event.get('message') or ''}".rstrip(": ")


def _stuck_creating(
    pods: Sequence[Mapping[str, Any]], now: datetime, limit: float
) -> Mapping[str, Any] | None:
    """The newest pod if a container of it has been waiting to be created for more than ``limit``
    seconds (volumes that do not mount, an image that never arrives): counted from when the pod was
    bound to its node, or from when its last init container finished.  A pod with a container running
    (init containers installing requirements take as long as they take), or one that ran before (a
    restart), is not stuck."""
    if not pods:
        return None
    pod = pods[-1]
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or not (pod.get("spec") or {}).get("nodeName"):
        return None
    inits, mains = status.get("initContainerStatuses") or [], status.get("containerStatuses") or []
    for container in [*inits, *mains]:
        state = container.get("state") or {}
        if "running" in state or container.get("lastState") or ("terminated" in state and container in mains):
            return None
    conditions = status.get("conditions") or []
    bound = ("PodScheduled", "True")
    scheduled = next((c for c in conditions if (c.get("type"), c.get("status")) == bound), None)
    moments = [
        _moment((scheduled or {}).get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"))
    ]
    moments += [_moment(((c.get("state") or {}).get("terminated") or {}).get("finishedAt")) for c in inits]
    known = [m for m in moments if m is not None]
    if not known or (now - max(known)).total_seconds() <= limit:
        return None
    return pod


def _moment(stamp: Any) -> datetime | None:
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


class _ArchiveTrouble(Exception):
    """Fetching a finished job's output failed."""


async def _joined(lines: AsyncIterable[str]) -> str:
    return "".join([line async for line in lines])


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def _complete_log(path: Path, whole: str) -> None:
    """Make the log file hold all of the job's output: append what following missed (live readers keep
    reading).  ``whole`` is what the cluster still has, which may be only the newest part (the kubelet
    keeps the current rotated file): what was followed is never thrown away for less.  Where the end
    of what was followed is found in ``whole``, what comes after it is added; where it is not, the
    cluster's copy replaces the file only if it is longer."""
    followed = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if whole.startswith(followed):
        missing = whole[len(followed) :]
    else:
        # The end of what was followed, as long as the two overlap (long anchors first: fewer false
        # matches in repetitive output).
        anchor, found = "", -1
        for size in LOG_ANCHOR_SIZES:
            anchor = followed[-size:]
            found = whole.find(anchor) if len(anchor) == size else -1
            if found >= 0:
                break
        if found < 0:
            if len(whole) > len(followed):
                partial = path.with_suffix(".partial")
                partial.write_text(whole, encoding="utf-8")
                partial.replace(path)
            return
        missing = whole[found + len(anchor) :]
    if missing:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(missing)


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


def _pods_must_explain(kube_job: Mapping[str, Any]) -> bool:
    """A Job that failed for a reason only its pods tell (not its deadline): the Job controller counts
    a pod as failed only once it has ended, so a pod the cache shows live means the cache lags."""
    return any(
        c.get("type") == "Failed" and c.get("status") == "True" and c.get("reason") != "DeadlineExceeded"
        for c in kube_job.get("status", {}).get("conditions", []) or []
    )


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


# --- the client's errors: one boundary ------------------------------------------------------------------


def _fault_of(exc: Exception) -> Fault:
    """What a client call's exception means; anything else raised there is a bug of ours, seen as
    passing so that it is retried for a while and then reported with its message."""
    if is_client_error(exc):
        return classify(exc)
    return Fault(Verdict.PASSING, f"{exc.__class__.__name__}: {exc}")


async def _attempt(call: Awaitable[T]) -> T | Fault:
    """Await one client call: its result, or what went wrong as a ``Fault`` (never an exception)."""
    try:
        return await call
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return _fault_of(exc)


def _launch_trouble(what: str, fault: Fault) -> Exception:
    """The exception a launch raises for ``fault``: try again later, or never."""
    message = f"{what}: {fault.message}"
    if fault.passing:
        return Unreachable(message, fault.retry_after)
    return LaunchError(message)

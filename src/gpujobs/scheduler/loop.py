"""The scheduling loop: runs the pure policy on events (submit, release, cancel) and on a timer.

Each cycle only decides and records: the queue and the jobs holding resources (both from the live
index, itself derived from the store's writes) → a snapshot of the executor's inventory, what those
jobs hold and recent usage → ``policy.decide`` → one store write that admits every chosen job
(queued → pending, with node and GPUs; each a compare-and-set, so a job cancelled meanwhile stays
cancelled).  It makes no executor call: the reconciler launches what was admitted.  What the policy
says about waiting jobs is kept in memory for job views: it changes every cycle, and writing it would
cost a write per waiting job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import DependencyUnavailable, IllegalTransition
from ..executors.base import Executor
from ..gputypes import normalise_gpu_type
from ..inventory import Inventory, slots_held_by_others
from ..models import JobStatus
from ..quotas import policy_quota, resolve
from ..store import JobRecord, Store
from ..store import repository as repo
from ..store.live import LiveJobs
from .policy import (
    Admission,
    Decision,
    PolicyConfig,
    Pool,
    Quota,
    Request,
    Running,
    Snapshot,
    Waiting,
    decide,
)
from .queue import QueueIndex
from .usage import UsageTracker

log = logging.getLogger(__name__)
# The live index is refreshed from the store this often: a safety net that heals a cache bug.
REFRESH_LIVE_SECONDS = 60.0
PAUSED = "admission is paused by the administrator"


def running_of(job: JobRecord, now: float | None = None, grace: float = 0.0) -> Running:
    began = job.started_at or job.admitted_at
    ends_at = began.timestamp() + job.timeout_seconds if began and job.timeout_seconds else None
    if job.status.is_terminal():  # being stopped: gone within the kill grace period
        ends_at = (now if now is not None else time.time()) + grace
    return Running(
        job_id=job.job_id,
        user=job.user,
        node=job.node,
        gpus=job.gpus,
        gpu_count=job.gpu_count,
        cpu=job.cpu_request,
        group=job.account_group,
        ends_at=ends_at,
        pool=None if job.node else job.gpu_type,
        memory=job.memory_request,
    )


def external_devices(
    inventory: Inventory, active: Sequence[JobRecord], holds: Mapping[str, Mapping[str, int]]
) -> dict[str, list[str]]:
    """Which device slots to count as held by other workloads (``holds``: per node, devices per type):
    of the slots of each type our own jobs do not hold, the highest indices."""
    ours: dict[str, set[str]] = defaultdict(set)
    for job in active:
        if job.node:
            ours[job.node].update(job.gpus)
    held: dict[str, list[str]] = {}
    for node in inventory.nodes:
        if holds.get(node.name):
            held[node.name] = slots_held_by_others(node, ours[node.name], holds[node.name])
    return held


def external_running(
    inventory: Inventory, active: Sequence[JobRecord], holds: Mapping[str, Mapping[str, int]]
) -> list[Running]:
    return [
        Running(job_id=f"other-workloads@{node}", user="", node=node, gpus=tuple(gpus), gpu_count=len(gpus))
        for node, gpus in external_devices(inventory, active, holds).items()
    ]


class RequestBuilder:
    """Queue entries → policy requests, with each user's quota resolved once per cycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._quotas: dict[tuple[str, tuple[str, ...]], Quota] = {}

    def quota_for(self, user: str, groups: tuple[str, ...]) -> Quota:
        key = (user, groups)
        if key not in self._quotas:
            rule = resolve(self.settings.quotas, user, groups)
            aliases = self.settings.gpu_type_aliases
            self._quotas[key] = policy_quota(rule, lambda t: normalise_gpu_type(t, aliases=aliases))
        return self._quotas[key]

    def __call__(self, entry: repo.QueueEntry) -> Request:
        levels = self.settings.priorities
        return Request(
            job_id=entry.job_id,
            gpu_count=entry.gpu_count,
            gpu_type=entry.gpu_type,
            cpu=entry.cpu_request,
            user=entry.user,
            group=entry.account_group,
            priority=levels.get(entry.priority, levels[self.settings.default_priority]),
            submitted_at=entry.created_at.timestamp(),
            runtime_limit=entry.timeout_seconds,
            quota=self.quota_for(entry.user, entry.groups),
            seq=entry.seq,
            memory=entry.memory_request,
        )


def admit_all(admissions: Sequence[Admission]) -> Callable[[Session], list[JobRecord]]:
    """One write for a whole cycle: each admission a compare-and-set from ``queued`` (a job cancelled
    while the cycle decided stays cancelled and is skipped)."""

    def work(session: Session) -> list[JobRecord]:
        admitted = []
        for admission in admissions:
            pool = admission.pool
            message = f"waiting for the cluster to add {_article(pool)} {pool} node" if pool else None
            try:
                with session.begin_nested():
                    admitted.append(
                        repo.change(
                            session,
                            admission.job_id,
                            JobStatus.PENDING,
                            only_from=(JobStatus.QUEUED,),
                            node=admission.node,
                            gpus=list(admission.gpus),
                            message=message,
                        ).after
                    )
            except IllegalTransition:
                continue
        return admitted

    return work


class SchedulerLoop:
    def __init__(self, store: Store, live: LiveJobs, executor: Executor, settings: Settings) -> None:
        self.store = store
        self.live = live
        self.executor = executor
        self.settings = settings
        self.usage = UsageTracker(settings.fair_share_half_life_seconds)
        # Node pools only mean something where a cluster autoscaler acts on pending pods.
        pools = tuple(Pool(p.gpu_type, p.gpus_per_node, p.max_nodes) for p in settings.pools)
        self.config = PolicyConfig(
            aging_interval_seconds=settings.aging_interval_seconds,
            group_shares=dict(settings.group_shares),
            pools=pools if executor.supports_pools else (),
        )
        self.waiting: dict[str, Waiting] = {}
        self.queued_demand: dict[str, int] = {}
        self.cycles = 0
        self.on_admit: Callable[[], None] = lambda: None  # the reconciler's wake
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refreshed_at = time.monotonic()

    @property
    def queue(self) -> QueueIndex:
        return self.live.queue

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        horizon = datetime.now(timezone.utc) - timedelta(
            seconds=8 * self.settings.fair_share_half_life_seconds
        )
        self.usage.load(await self.store.read(lambda s: repo.recent_usage(s, horizon)))
        self._task = asyncio.create_task(self._run(), name="gpujobs-scheduler")
        self.wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.schedule_interval_seconds)
            self._wake.clear()
            began = time.perf_counter()
            try:
                if time.monotonic() - self._refreshed_at > REFRESH_LIVE_SECONDS:
                    self._refreshed_at = time.monotonic()
                    await self.live.refresh(self.store)
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except DependencyUnavailable as exc:  # the store's outage is reported once, by the store
                log.debug("scheduling cycle not recorded: %s", exc.message)
            except Exception:
                log.exception("scheduling cycle failed; trying again on the next event")
            # Events that arrive meanwhile are served by one later cycle.  The pause grows with the
            # cycle's cost, so a long queue under a burst of submissions cannot starve the API.
            await asyncio.sleep(min(0.5, 2 * (time.perf_counter() - began)))

    def snapshot(self, active: Sequence[JobRecord], now: float | None = None) -> Snapshot:
        """Inventory, jobs holding resources and usage: recent history plus what running jobs have used."""
        now = time.time() if now is None else now
        users, groups = self.usage.snapshot(now)
        for job in active:
            if job.started_at is not None and not job.status.is_terminal():
                used = job.gpu_count * max(0.0, now - job.started_at.timestamp())
                users[job.user] = users.get(job.user, 0.0) + used
                groups[job.account_group] = groups.get(job.account_group, 0.0) + used
        inventory = self.executor.inventory()
        grace = self.settings.kill_grace_seconds
        running = [running_of(job, now, grace) for job in active]
        running += external_running(inventory, active, self.executor.external_holds())
        return Snapshot(
            nodes=inventory.nodes, running=tuple(running), user_usage=users, group_usage=groups, now=now
        )

    async def cycle(self) -> Decision:
        queued = self.queue.entries()
        if queued and self.executor.view_state().stale:
            # Nothing is admitted onto a view that may be wrong (GPUs it thinks free may be taken, a
            # node it thinks there may be gone); job views say why (``waiting_for``).
            self.cycles += 1
            return Decision(admissions=(), waiting=())
        if self.settings.admission_paused or not queued:
            # Nothing to admit (job views of a paused queue answer from its index: ``waiting_for``);
            # on a 5,000-node cluster an empty cycle would still cost the API tens of milliseconds.
            self.waiting, self.queued_demand = {}, {}
            self.cycles += 1
            return Decision(admissions=(), waiting=())
        active = self.live.holding()
        build = RequestBuilder(self.settings)
        decision = decide([build(entry) for entry in queued], self.snapshot(active), self.config)
        self.waiting = {entry.job_id: entry for entry in decision.waiting}
        demand: dict[str, int] = defaultdict(int)
        for entry in queued:
            if entry.job_id in self.waiting and entry.gpu_count:
                demand[entry.gpu_type] += entry.gpu_count
        self.queued_demand = dict(demand)
        if decision.admissions:
            await self.store.write(admit_all(decision.admissions))
            self.on_admit()
        self.cycles += 1
        return decision

    def waiting_for(self, job_id: str) -> Waiting | None:
        """Why a queued job waits and its place in the queue, as of the last cycle."""
        if self.settings.admission_paused:
            position = self.queue.position(job_id)
            return Waiting(job_id, position, PAUSED) if position else None
        view = self.executor.view_state()
        if view.stale:
            position = self.queue.position(job_id)
            why = f"nothing is admitted until gpujobs is in touch with the cluster again ({view.reason})"
            return Waiting(job_id, position, why) if position else None
        return self.waiting.get(job_id)


def _article(word: str | None) -> str:
    return "an" if word and word[0] in "aeiou" else "a"

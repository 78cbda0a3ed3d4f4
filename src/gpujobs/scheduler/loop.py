"""The scheduling loop: runs the pure policy on events (submit, finish, cancel) and on a timer.

Each cycle: read the queue and the active jobs from the store → snapshot the executor's inventory and
what active jobs hold → ``policy.decide`` → record each admission (queued → pending, with node and
GPUs) through the transition guard → hand it to the executor.  What the policy says about waiting jobs
is kept in memory for job views (it changes every cycle; writing it would cost a write per job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence

from ..config import Settings
from ..errors import IllegalTransition
from ..executors.base import Executor, LaunchError
from ..models import JobStatus
from ..store import JobRecord, Store
from ..store import repository as repo
from .policy import Decision, Request, Snapshot, Waiting, decide

log = logging.getLogger(__name__)


def snapshot_of(executor: Executor, active: Sequence[JobRecord]) -> Snapshot:
    held_gpus: dict[str, set[str]] = defaultdict(set)
    held_cpu: dict[str, float] = defaultdict(float)
    for job in active:
        if job.node:
            held_gpus[job.node].update(job.gpus)
            held_cpu[job.node] += job.cpu_request
    return Snapshot(
        nodes=executor.inventory().nodes,
        held_gpus={node: frozenset(gpus) for node, gpus in held_gpus.items()},
        held_cpu=dict(held_cpu),
    )


def request_of(job: JobRecord) -> Request:
    return Request(job_id=job.job_id, gpu_count=job.gpu_count, gpu_type=job.gpu_type, cpu=job.cpu_request)


class SchedulerLoop:
    def __init__(self, store: Store, executor: Executor, settings: Settings) -> None:
        self.store = store
        self.executor = executor
        self.settings = settings
        self.waiting: dict[str, Waiting] = {}
        self.queued_demand: dict[str, int] = {}
        self.cycles = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpujobs-scheduler")

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
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling cycle failed; trying again on the next event")

    async def cycle(self) -> Decision:
        queued, active = await self.store.read(
            lambda s: (repo.jobs_in(s, [JobStatus.QUEUED]), repo.jobs_in(s, JobStatus.active()))
        )
        decision = decide([request_of(job) for job in queued], snapshot_of(self.executor, active))
        if self.settings.admission_paused:
            paused = "admission is paused by the administrator"
            decision = Decision(
                admissions=(),
                waiting=tuple(
                    Waiting(job.job_id, position, paused) for position, job in enumerate(queued, 1)
                ),
            )
        self.waiting = {entry.job_id: entry for entry in decision.waiting}
        demand: dict[str, int] = defaultdict(int)
        for job in queued:
            if job.job_id in self.waiting and job.gpu_count:
                demand[job.gpu_type] += job.gpu_count
        self.queued_demand = dict(demand)
        for admission in decision.admissions:
            await self._admit(admission.job_id, admission.node, admission.gpus)
        self.cycles += 1
        return decision

    async def _admit(self, job_id: str, node: str, gpus: tuple[str, ...]) -> None:
        try:
            job = await self.store.write(
                lambda s: repo.transition(
                    s, job_id, JobStatus.PENDING, node=node, gpus=list(gpus), message=None
                )
            )
        except IllegalTransition:
            return  # cancelled while we decided
        try:
            await self.executor.launch(job)
        except LaunchError as exc:
            log.warning("job %s could not be launched: %s", job_id, exc)
            why = str(exc)
            with contextlib.suppress(IllegalTransition):
                await self.store.write(
                    lambda s: repo.transition(s, job_id, JobStatus.FAILED, reason="LaunchFailed", message=why)
                )

"""The scheduling loop: runs the pure policy on events (submit, finish, cancel) and on a timer.

Each cycle: the queue (from the in-memory index) and the active jobs (from the store) → snapshot of
the executor's inventory and what active jobs hold → ``policy.decide`` → record each admission
(queued → pending, with node and GPUs) through the store's transition guard → hand it to the executor.
What the policy says about waiting jobs is kept in memory for job views: it changes every cycle, and
writing it would cost a write per waiting job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from ..config import Settings
from ..errors import IllegalTransition
from ..executors.base import Executor, LaunchError
from ..models import JobStatus
from ..store import JobRecord, Store
from ..store import repository as repo
from .policy import Decision, Request, Snapshot, Waiting, decide
from .queue import QueueIndex

log = logging.getLogger(__name__)
RELOAD_QUEUE_SECONDS = 60.0
PAUSED = "admission is paused by the administrator"


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


def request_of(entry: repo.QueueEntry) -> Request:
    return Request(
        job_id=entry.job_id, gpu_count=entry.gpu_count, gpu_type=entry.gpu_type, cpu=entry.cpu_request
    )


class SchedulerLoop:
    def __init__(self, store: Store, executor: Executor, settings: Settings) -> None:
        self.store = store
        self.executor = executor
        self.settings = settings
        self.queue = QueueIndex()
        self.waiting: dict[str, Waiting] = {}
        self.queued_demand: dict[str, int] = {}
        self.cycles = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._queue_loaded_at = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.reload_queue()
        self._task = asyncio.create_task(self._run(), name="gpujobs-scheduler")
        self.wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload_queue(self) -> None:
        self.queue.load(await self.store.read(repo.queue_entries))
        self._queue_loaded_at = time.monotonic()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.schedule_interval_seconds)
            self._wake.clear()
            began = time.perf_counter()
            try:
                if time.monotonic() - self._queue_loaded_at > RELOAD_QUEUE_SECONDS:
                    await self.reload_queue()
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling cycle failed; trying again on the next event")
            # Events that arrive meanwhile are served by one later cycle.  The pause grows with the
            # cycle's cost, so a long queue under a burst of submissions cannot starve the API.
            await asyncio.sleep(min(0.5, 2 * (time.perf_counter() - began)))

    async def cycle(self) -> Decision:
        queued = self.queue.entries()
        if self.settings.admission_paused:
            # Nothing is admitted; job views answer from the queue index (see ``waiting_for``).
            self.waiting = {}
            self.cycles += 1
            return Decision(admissions=(), waiting=())
        active = await self.store.read(lambda s: repo.jobs_in(s, JobStatus.active()))
        decision = decide([request_of(entry) for entry in queued], snapshot_of(self.executor, active))
        self.waiting = {entry.job_id: entry for entry in decision.waiting}
        demand: dict[str, int] = defaultdict(int)
        for entry in queued:
            if entry.job_id in self.waiting and entry.gpu_count:
                demand[entry.gpu_type] += entry.gpu_count
        self.queued_demand = dict(demand)
        for admission in decision.admissions:
            await self._admit(admission.job_id, admission.node, admission.gpus)
        self.cycles += 1
        return decision

    def waiting_for(self, job_id: str) -> Waiting | None:
        """Why a queued job waits and its place in the queue, as of the last cycle."""
        if self.settings.admission_paused:
            position = self.queue.position(job_id)
            return Waiting(job_id, position, PAUSED) if position else None
        return self.waiting.get(job_id)

    async def _admit(self, job_id: str, node: str, gpus: tuple[str, ...]) -> None:
        self.queue.discard(job_id)
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

"""The live jobs in memory: queued ones (for scheduling) and those holding resources (for the
reconciler, the scheduler's capacity and ``gpu-status``), derived from the store's own writes.

The store is the truth; this index is a cache of it that never reads on its own: it is loaded and
refreshed by a snapshot read *inside the writer's transaction* (``refresh``), and after that it only
applies, in commit order, what each committed write changed (``Store.subscribe``).  A snapshot that
was read before a write is therefore always applied before that write's change, so it can never
overwrite newer state, and a refresh now and then heals any cache bug instead of hiding a race.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..models import JobStatus
from ..scheduler.queue import QueueIndex
from . import repository as repo
from .database import Published, Snapshot, Store, publish
from .records import JobRecord

_KIND = "live-jobs"


def _read_snapshot(session: Session) -> None:
    publish(session, Snapshot(_KIND, (repo.queue_entries(session), repo.jobs_to_reconcile(session))))


def holds(job: JobRecord) -> bool:
    """The test ``repository.jobs_to_reconcile`` makes in SQL, on one record."""
    return job.holding or job.status in (JobStatus.PENDING, JobStatus.RUNNING)


class LiveJobs:
    def __init__(self) -> None:
        self.queue = QueueIndex()
        self._holding: dict[str, JobRecord] = {}
        self._sorted: list[JobRecord] | None = []

    async def attach(self, store: Store) -> None:
        """Listen to the store's commits, then load (in the writer's order)."""
        store.subscribe(self.apply)
        await self.refresh(store)

    async def refresh(self, store: Store) -> None:
        await store.write(_read_snapshot)

    def apply(self, changes: list[Published]) -> None:
        for change in changes:
            if isinstance(change, Snapshot):
                if change.kind == _KIND:
                    queued, holding = change.value
                    self.queue.load(queued)
                    self._holding = {job.job_id: job for job in holding}
                continue
            self._apply_job(change)
        self._sorted = None

    def _apply_job(self, job: JobRecord) -> None:
        if job.status is JobStatus.QUEUED:
            self.queue.add(job)
        else:
            self.queue.discard(job.job_id)
        if holds(job):
            self._holding[job.job_id] = job
        else:
            self._holding.pop(job.job_id, None)

    def holding(self) -> list[JobRecord]:
        """Jobs holding a node's GPUs and CPU (pending, running, ended but not yet confirmed gone), oldest
        first.  Do not change the list."""
        if self._sorted is None:
            self._sorted = sorted(self._holding.values(), key=lambda job: job.seq)
        return self._sorted

    def get(self, job_id: str) -> JobRecord | None:
        return self._holding.get(job_id)

"""The queue in memory: what scheduling needs of each queued job, in submission order.

The store stays the truth; this index spares each cycle a read of every queued row.  It is part of the
live index (``store/live.py``), which changes it only as the store's commits say, in commit order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..store.records import JobRecord
from ..store.repository import QueueEntry


def entry_of(job: JobRecord) -> QueueEntry:
    return QueueEntry(
        seq=job.seq,
        job_id=job.job_id,
        user=job.user,
        priority=job.priority,
        gpu_count=job.gpu_count,
        gpu_type=job.gpu_type,
        cpu_request=job.cpu_request,
        created_at=job.created_at,
        groups=job.groups,
        account_group=job.account_group,
        timeout_seconds=job.timeout_seconds,
        memory_request=job.memory_request,
    )


class QueueIndex:
    """Queued jobs by id, and in submission order (kept sorted as jobs come and go)."""

    def __init__(self) -> None:
        self._entries: dict[str, QueueEntry] = {}
        self._ordered: list[QueueEntry] = []
        self._seqs: list[int] = []
        self._per_user: dict[str, int] = {}

    def load(self, entries: Iterable[QueueEntry]) -> None:
        self._entries = {entry.job_id: entry for entry in entries}
        self._ordered = sorted(self._entries.values(), key=lambda entry: entry.seq)
        self._seqs = [entry.seq for entry in self._ordered]
        self._per_user = {}
        for entry in self._ordered:
            self._per_user[entry.user] = self._per_user.get(entry.user, 0) + 1

    def add(self, job: JobRecord) -> None:
        if job.job_id in self._entries:
            return
        entry = entry_of(job)
        self._entries[job.job_id] = entry
        self._per_user[entry.user] = self._per_user.get(entry.user, 0) + 1
        if not self._seqs or entry.seq > self._seqs[-1]:  # the usual case: a new submission
            self._ordered.append(entry)
            self._seqs.append(entry.seq)
            return
        at = bisect.bisect_left(self._seqs, entry.seq)
        self._ordered.insert(at, entry)
        self._seqs.insert(at, entry.seq)

    def discard(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        self._per_user[entry.user] -= 1
        at = bisect.bisect_left(self._seqs, entry.seq)
        del self._ordered[at]
        del self._seqs[at]

    def count_for(self, user: str) -> int:
        """How many jobs ``user`` has queued."""
        return self._per_user.get(user, 0)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def position(self, job_id: str) -> int | None:
        """1-based place in submission order, or None when not queued."""
        entry = self._entries.get(job_id)
        return None if entry is None else bisect.bisect_left(self._seqs, entry.seq) + 1

    def entries(self) -> list[QueueEntry]:
        """Queued jobs in submission order (a copy: cycles may run while the queue changes)."""
        return list(self._ordered)

"""Queries and the one transition guard.  Functions take a Session and return plain records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..errors import IllegalTransition, InvalidSpec, JobNotFound
from ..models import JobStatus
from .orm import HeartbeatRow, IdempotencyKeyRow, JobRow, UsageRow
from .records import JobRecord

S = JobStatus

# The job life, in one table: from each state, the states it may move to.  A job may skip
# `running` (it can finish between two polls), and `pending` may return to `queued` when an
# executor hands a job back (a lost node in Kubernetes, say).
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.PENDING, S.CANCELLED, S.FAILED}),
    S.PENDING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))


def record_from(values: Mapping[str, Any]) -> JobRecord:
    """A record from column values (a row's, or those just inserted); absent columns take defaults."""
    known = {name: values[name] for name in _RECORD_FIELDS if name in values}
    known.update(
        status=JobStatus(values["status"]),
        groups=tuple(values.get("groups") or ()),
        gpus=tuple(values.get("gpus") or ()),
        spec=dict(values["spec"]),
    )
    return JobRecord(**known)


def to_record(row: JobRow) -> JobRecord:
    return record_from({name: getattr(row, name) for name in _RECORD_FIELDS})


def new_job_values(**values: Any) -> dict[str, Any]:
    """A new job's column values: the given ones plus the defaults of a freshly queued job."""
    return {
        "status": S.QUEUED.value,
        "created_at": utcnow(),
        "attempts": 0,
        "gpus": [],
        "holding": False,
        **values,
    }


def record_of(seq: int, values: dict[str, Any]) -> JobRecord:
    """The record of a row just inserted with ``values`` (no read back)."""
    return record_from({**values, "seq": seq})


def add_job(session: Session, **values: Any) -> JobRecord:
    """Insert a queued job (a Core insert: the ORM's unit of work costs more than the write itself)."""
    values = new_job_values(**values)
    seq = session.execute(insert(JobRow).values(**values).returning(JobRow.seq)).scalar_one()
    return changed(session, record_of(seq, values))


@dataclass(frozen=True)
class QueueEntry:
    """What scheduling needs of a queued job, read without the spec (cheap for long queues)."""

    seq: int
    job_id: str
    user: str
    priority: str
    gpu_count: int
    gpu_type: str
    cpu_request: float
    created_at: datetime
    groups: tuple[str, ...] = ()
    account_group: str = "default"
    timeout_seconds: int | None = None
    memory_request: float = 0.0


def queue_entries(session: Session) -> list[QueueEntry]:
    """Queued jobs, oldest first."""
    columns = (
        JobRow.seq,
        JobRow.job_id,
        JobRow.user,
        JobRow.priority,
        JobRow.gpu_count,
        JobRow.gpu_type,
        JobRow.cpu_request,
        JobRow.created_at,
        JobRow.groups,
        JobRow.account_group,
        JobRow.timeout_seconds,
        JobRow.memory_request,
    )
    query = select(*columns).where(JobRow.status == S.QUEUED.value).order_by(JobRow.seq)
    return [
        QueueEntry(
            *row[:8],
            groups=tuple(row[8] or ()),
            account_group=row[9],
            timeout_seconds=row[10],
            memory_request=row[11],
        )
        for row in session.execute(query)
    ]


def get_job(session: Session, job_id: str) -> JobRecord | None:
    row = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
    return to_record(row) if row else None


def list_jobs(
    session: Session,
    *,
    user: str | None = None,
    statuses: Sequence[JobStatus] = (),
    limit: int = 50,
    before_seq: int | None = None,
) -> list[JobRecord]:
    """Newest first; ``before_seq`` continues a page."""
    query = select(JobRow).order_by(JobRow.seq.desc()).limit(limit)
    if user is not None:
        query = query.where(JobRow.user == user)
    if statuses:
        query = query.where(JobRow.status.in_([s.value for s in statuses]))
    if before_seq is not None:
        query = query.where(JobRow.seq < before_seq)
    return [to_record(row) for row in session.scalars(query)]


def count_by_status(session: Session) -> dict[JobStatus, int]:
    counts = {status: 0 for status in JobStatus}
    for status, count in session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)):
        counts[JobStatus(status)] = count
    return counts


@dataclass(frozen=True)
class Change:
    """What a compare-and-set transition replaced (``before``) and what it wrote (``after``)."""

    before: JobRecord
    after: JobRecord


def changed(session: Session, record: JobRecord) -> JobRecord:
    """Note a job's new state on the session: the store tells its listeners (the in-memory caches)
    once the transaction commits, in commit order, and forgets notes of a write that rolled back."""
    session.info.setdefault("changed", []).append(record)
    return record


def _locked_row(session: Session, job_id: str) -> JobRow | None:
    # FOR UPDATE on PostgreSQL; SQLite's one writer already serialises.
    return session.scalars(select(JobRow).where(JobRow.job_id == job_id).with_for_update()).one_or_none()


def change(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    only_from: Iterable[JobStatus] | None = None,
    **fields: Any,
) -> Change:
    """Move a job to ``to`` (compare-and-set): refused with IllegalTransition when the job life does not
    allow the move from its current state, or when the state is not one of ``only_from``.

    Timestamps follow the state unless given.  Whether the job *holds* its node and GPUs follows too:
    admission takes them; going back to the queue gives them up; an end leaves them held only when the
    caller says its processes may still run (``holding=True``, a cancel).
    """
    row = _locked_row(session, job_id)
    if row is None:
        raise JobNotFound(job_id)
    before = to_record(row)
    allowed = to in ALLOWED_TRANSITIONS[before.status] and (
        only_from is None or before.status in set(only_from)
    )
    if not allowed:
        raise IllegalTransition(f"job {job_id} is {before.status.value}; it cannot become {to.value}")
    now = utcnow()
    values: dict[str, Any] = {"status": to.value, **fields}
    if to is S.PENDING:
        values.setdefault("admitted_at", now)
        values.setdefault("holding", True)
    if to is S.RUNNING:
        values.setdefault("started_at", now)
    if to.is_terminal():
        values.setdefault("finished_at", now)
        values.setdefault("holding", False)
    if to is S.QUEUED:
        values.update(node=None, gpus=[], admitted_at=None, launched_at=None, holding=False)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return Change(before, changed(session, to_record(row)))


def transition(session: Session, job_id: str, to: JobStatus, **fields: Any) -> JobRecord:
    """``change`` when only the result matters."""
    return change(session, job_id, to, **fields).after


def release(session: Session, job_id: str, *, message: str | None = None) -> JobRecord | None:
    """The executor confirmed that nothing of an ended job runs any more: its node and GPUs are free
    (``message``, when given, replaces the job's).  None when it held nothing (already released)."""
    row = _locked_row(session, job_id)
    if row is None or not row.holding or not JobStatus(row.status).is_terminal():
        return None
    row.holding = False
    if message is not None:
        row.message = message
    session.flush()
    return changed(session, to_record(row))


def mark_launched(session: Session, job_id: str) -> JobRecord:
    """Record, before the executor is asked, that a pending job is being handed over: from here on it
    may have run, so it is never put back in the queue on a guess."""
    row = _locked_row(session, job_id)
    if row is None:
        raise JobNotFound(job_id)
    if row.status != S.PENDING.value:
        raise IllegalTransition(f"job {job_id} is {row.status}; only a pending job is launched")
    if row.launched_at is None:
        row.launched_at = utcnow()
        session.flush()
    return changed(session, to_record(row))


def jobs_to_reconcile(session: Session) -> list[JobRecord]:
    """Jobs the reconciler looks after: admitted and not yet released (pending, running, and ended ones
    whose processes have still to be confirmed gone), oldest first."""
    query = (
        select(JobRow)
        .where((JobRow.holding.is_(True)) | JobRow.status.in_([S.PENDING.value, S.RUNNING.value]))
        .order_by(JobRow.seq)
    )
    return [to_record(row) for row in session.scalars(query)]


class IdempotencyConflict(InvalidSpec):
    """The same key came with a different body."""


def job_for_idempotency_key(session: Session, user: str, key: str, body_hash: str) -> JobRecord | None:
    """The job an earlier submission with this key made, None when there was none; the same key with a
    different body is refused (IdempotencyConflict)."""
    existing = session.get(IdempotencyKeyRow, (user, key))
    if existing is None:
        return None
    if existing.body_hash != body_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used for a different job; send a new key for a new job",
            field="Idempotency-Key",
        )
    job = get_job(session, existing.job_id)
    if job is None:  # pragma: no cover - keys and jobs are written together
        raise JobNotFound(existing.job_id)
    return job


def add_job_once(
    session: Session, values: Mapping[str, Any], *, key: str, body_hash: str
) -> tuple[JobRecord, bool]:
    """Insert a queued job under the client's idempotency key, or find the job that key already made:
    (job, created).  The same key with a different body is refused (IdempotencyConflict)."""
    user = values["user"]
    earlier = job_for_idempotency_key(session, user, key, body_hash)
    if earlier is not None:
        return earlier, False
    full = new_job_values(**values)
    seq = session.execute(insert(JobRow).values(**full).returning(JobRow.seq)).scalar_one()
    session.execute(
        insert(IdempotencyKeyRow).values(
            user=user, key=key, job_id=full["job_id"], body_hash=body_hash, created_at=full["created_at"]
        )
    )
    return changed(session, record_of(seq, full)), True


def forget_idempotency_keys(session: Session, before: datetime) -> int:
    """Drop keys made before ``before`` (kept at least a day: a client retries within minutes)."""
    result = session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


def heartbeat(session: Session) -> None:
    """Rewrite the one heartbeat row: a write that fails when the database cannot take writes."""
    row = session.get(HeartbeatRow, 1)
    if row is None:
        session.add(HeartbeatRow(id=1, at=utcnow()))
    else:
        row.at = utcnow()
    session.flush()


def record_usage(
    session: Session, job: JobRecord, *, device_type: str | None, cost_per_gpu_hour: float
) -> None:
    """What an ended job used; nothing for a job that never started.  Once per job."""
    if job.started_at is None or job.finished_at is None:
        return
    wall = max(0.0, (job.finished_at - job.started_at).total_seconds())
    gpu_seconds = wall * job.gpu_count
    session.execute(
        insert(UsageRow).values(
            job_id=job.job_id,
            user=job.user,
            account_group=job.account_group,
            gpu_type=device_type or job.gpu_type,
            gpu_count=job.gpu_count,
            status=job.status.value,
            started_at=job.started_at,
            finished_at=job.finished_at,
            gpu_seconds=gpu_seconds,
            cpu_seconds=wall * (job.cpu_request or 1.0),
            cost=gpu_seconds / 3600 * cost_per_gpu_hour,
        )
    )


@dataclass(frozen=True)
class UsageTotal:
    key: str
    jobs: int
    gpu_seconds: float
    cpu_seconds: float
    cost: float


def usage_totals(
    session: Session, *, since: datetime, until: datetime, group_by: str, user: str | None = None
) -> list[UsageTotal]:
    """Usage of jobs that ended in [since, until), summed by user, account group or GPU type."""
    key = {"user": UsageRow.user, "group": UsageRow.account_group, "gpu_type": UsageRow.gpu_type}[group_by]
    query = (
        select(
            key,
            func.count(),
            func.sum(UsageRow.gpu_seconds),
            func.sum(UsageRow.cpu_seconds),
            func.sum(UsageRow.cost),
        )
        .where(UsageRow.finished_at >= since, UsageRow.finished_at < until)
        .group_by(key)
        .order_by(key)
    )
    if user is not None:
        query = query.where(UsageRow.user == user)
    return [
        UsageTotal(str(k), int(n), float(g or 0), float(c or 0), float(cost or 0))
        for k, n, g, c, cost in session.execute(query)
    ]


def recent_usage(session: Session, since: datetime) -> list[tuple[str, str, float, datetime]]:
    """(user, account group, GPU-seconds, finished at) of jobs that ended since ``since``."""
    query = select(UsageRow.user, UsageRow.account_group, UsageRow.gpu_seconds, UsageRow.finished_at).where(
        UsageRow.finished_at >= since
    )
    return [(u, g, float(s), f) for u, g, s, f in session.execute(query)]


def update_fields(session: Session, job_id: str, *, while_status: JobStatus, **fields: Any) -> bool:
    """Change fields that are not the state (a waiting job's message, say), only while the job is still
    in ``while_status``: news that arrives late changes nothing."""
    query = update(JobRow).where(JobRow.job_id == job_id, JobRow.status == while_status.value)
    updated = bool(session.execute(query.values(**fields)).rowcount)  # type: ignore[attr-defined]
    if updated:
        record = get_job(session, job_id)
        if record is not None:
            changed(session, record)
    return updated

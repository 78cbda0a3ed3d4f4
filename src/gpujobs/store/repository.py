"""Queries and the one transition guard.  Functions take a Session and return plain records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ..errors import IllegalTransition, JobNotFound
from ..models import JobStatus, Priority
from .orm import JobRow
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


def to_record(row: JobRow) -> JobRecord:
    return JobRecord(
        seq=row.seq,
        job_id=row.job_id,
        user=row.user,
        groups=tuple(row.groups or ()),
        name=row.name,
        status=JobStatus(row.status),
        priority=Priority(row.priority),
        gpu_required=row.gpu_required,
        gpu_count=row.gpu_count,
        gpu_type=row.gpu_type,
        cpu_request=row.cpu_request,
        spec=dict(row.spec),
        created_at=row.created_at,
        reason=row.reason,
        message=row.message,
        node=row.node,
        gpus=tuple(row.gpus or ()),
        exit_code=row.exit_code,
        attempts=row.attempts,
        admitted_at=row.admitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def new_job_values(**values: Any) -> dict[str, Any]:
    """A new job's column values: the given ones plus the defaults of a freshly queued job."""
    return {"status": S.QUEUED.value, "created_at": utcnow(), "attempts": 0, "gpus": [], **values}


def record_of(seq: int, values: dict[str, Any]) -> JobRecord:
    """The record of a row just inserted with ``values`` (no read back)."""
    return JobRecord(
        seq=seq,
        job_id=values["job_id"],
        user=values["user"],
        groups=tuple(values.get("groups") or ()),
        name=values["name"],
        status=JobStatus(values["status"]),
        priority=Priority(values["priority"]),
        gpu_required=values["gpu_required"],
        gpu_count=values["gpu_count"],
        gpu_type=values["gpu_type"],
        cpu_request=values["cpu_request"],
        spec=values["spec"],
        created_at=values["created_at"],
    )


def add_job(session: Session, **values: Any) -> JobRecord:
    """Insert a queued job (a Core insert: the ORM's unit of work costs more than the write itself)."""
    values = new_job_values(**values)
    seq = session.execute(insert(JobRow).values(**values).returning(JobRow.seq)).scalar_one()
    return record_of(seq, values)


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
    )
    query = select(*columns).where(JobRow.status == S.QUEUED.value).order_by(JobRow.seq)
    return [QueueEntry(*row) for row in session.execute(query)]


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


def jobs_in(session: Session, statuses: Iterable[JobStatus]) -> list[JobRecord]:
    """Jobs in these states, oldest first."""
    query = select(JobRow).where(JobRow.status.in_([s.value for s in statuses])).order_by(JobRow.seq)
    return [to_record(row) for row in session.scalars(query)]


def count_by_status(session: Session) -> dict[JobStatus, int]:
    counts = {status: 0 for status in JobStatus}
    for status, count in session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)):
        counts[JobStatus(status)] = count
    return counts


def transition(session: Session, job_id: str, to: JobStatus, **fields: Any) -> JobRecord:
    """Move a job to ``to``, refusing moves the job life does not allow (IllegalTransition).

    The check and the write are one conditional UPDATE, so two writers racing (a cancel and a
    finish, say) cannot both win.  Timestamps follow the state unless given.
    """
    allowed_from = [state.value for state, targets in ALLOWED_TRANSITIONS.items() if to in targets]
    now = utcnow()
    values: dict[str, Any] = {"status": to.value, **fields}
    if to is S.PENDING:
        values.setdefault("admitted_at", now)
    if to is S.RUNNING:
        values.setdefault("started_at", now)
    if to.is_terminal():
        values.setdefault("finished_at", now)
    if to is S.QUEUED:
        values.update(node=None, gpus=[], admitted_at=None)
    result = session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id, JobRow.status.in_(allowed_from))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        current = get_job(session, job_id)
        if current is None:
            raise JobNotFound(job_id)
        raise IllegalTransition(f"job {job_id} is {current.status.value}; it cannot become {to.value}")
    record = get_job(session, job_id)
    assert record is not None
    return record


def update_fields(session: Session, job_id: str, **fields: Any) -> None:
    """Change fields that are not the state (attempt counts, say)."""
    session.execute(update(JobRow).where(JobRow.job_id == job_id).values(**fields))

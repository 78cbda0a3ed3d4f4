"""Queries and the one transition guard.  Functions take a Session and return plain records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ..errors import IllegalTransition, JobNotFound
from ..models import JobStatus
from .orm import JobRow, UsageRow
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
    return {"status": S.QUEUED.value, "created_at": utcnow(), "attempts": 0, "gpus": [], **values}


def record_of(seq: int, values: dict[str, Any]) -> JobRecord:
    """The record of a row just inserted with ``values`` (no read back)."""
    return record_from({**values, "seq": seq})


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
    groups: tuple[str, ...] = ()
    account_group: str = "default"
    timeout_seconds: int | None = None


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
    )
    query = select(*columns).where(JobRow.status == S.QUEUED.value).order_by(JobRow.seq)
    return [
        QueueEntry(*row[:8], groups=tuple(row[8] or ()), account_group=row[9], timeout_seconds=row[10])
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
    return bool(session.execute(query.values(**fields)).rowcount)  # type: ignore[attr-defined]

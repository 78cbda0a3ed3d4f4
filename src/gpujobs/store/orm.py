"""Tables.  Changes here need an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    user: Mapped[str] = mapped_column(String(255), nullable=False)
    groups: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16), nullable=False)
    gpu_required: Mapped[bool] = mapped_column(Boolean, nullable=False)
    gpu_count: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(64), nullable=False)
    cpu_request: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    node: Mapped[str | None] = mapped_column(String(255))
    gpus: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    account_group: Mapped[str] = mapped_column(String(255), nullable=False, default="default")
    memory_request: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    # True from admission until the executor confirms nothing of the job runs any more: its node, GPUs
    # and CPU are not free before (a cancelled job keeps them while its processes stop).
    holding: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Set before the job is handed to the executor (the wish first): from then on it may have run.
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_jobs_user_seq", "user", "seq"),
        Index("ix_jobs_status_seq", "status", "seq"),
        Index("ix_jobs_holding", "holding"),
    )


class IdempotencyKeyRow(Base):
    """A client's key for one submission: a retry with the same key gets the same job."""

    __tablename__ = "idempotency_keys"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), nullable=False)
    body_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_idempotency_created", "created_at"),)


class HeartbeatRow(Base):
    """One row rewritten to learn whether the database takes writes (health checks)."""

    __tablename__ = "heartbeat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class UsageRow(Base):
    """What a job used, recorded once when it ends (if it ever started)."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    user: Mapped[str] = mapped_column(String(255), nullable=False)
    account_group: Mapped[str] = mapped_column(String(255), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(64), nullable=False)
    gpu_count: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    cpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    cost: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (
        Index("ix_usage_finished", "finished_at"),
        Index("ix_usage_user_finished", "user", "finished_at"),
    )

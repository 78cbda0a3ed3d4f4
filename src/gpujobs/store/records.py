"""Plain snapshots of rows, safe to pass between threads and layers (no ORM session attached)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..models import JobSpec, JobStatus, JobView


@dataclass(frozen=True)
class JobRecord:
    seq: int
    job_id: str
    user: str
    name: str
    status: JobStatus
    priority: str
    gpu_required: bool
    gpu_count: int
    gpu_type: str
    cpu_request: float
    spec: dict[str, Any]
    created_at: datetime
    groups: tuple[str, ...] = ()
    account_group: str = "default"
    timeout_seconds: int | None = None
    reason: str | None = None
    message: str | None = None
    node: str | None = None
    gpus: tuple[str, ...] = field(default_factory=tuple)
    exit_code: int | None = None
    attempts: int = 0
    admitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    memory_request: float = 0.0
    holding: bool = False
    launched_at: datetime | None = None

    @property
    def stopping(self) -> bool:
        """Ended in the store (cancelled) while its processes may still run: it keeps what it holds."""
        return self.holding and self.status.is_terminal()

    @property
    def job_spec(self) -> JobSpec:
        return JobSpec.model_validate(self.spec)

    def view(self, *, message: str | None = None, queue_position: int | None = None) -> JobView:
        """The API view; a waiting job's live ``message`` and position come from the scheduler."""
        spec = self.spec
        return JobView(
            job_id=self.job_id,
            name=self.name,
            user=self.user,
            status=self.status,
            reason=self.reason,
            message=message if message is not None else self.message,
            queue_position=queue_position,
            gpu_required=self.gpu_required,
            gpu_count=self.gpu_count,
            gpu_type=self.gpu_type,
            priority=self.priority,
            cpu_limit=spec.get("cpu_limit"),
            memory_limit=spec.get("memory_limit"),
            timeout_seconds=spec.get("timeout_seconds"),
            retries=spec.get("retries", 0),
            attempts=self.attempts,
            image=spec.get("image"),
            script_path=spec.get("script_path"),
            created_at=self.created_at,
            admitted_at=self.admitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            node=self.node,
            gpus=list(self.gpus),
        )

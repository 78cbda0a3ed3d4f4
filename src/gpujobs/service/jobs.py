"""What the routes do, apart from HTTP: submit, look up with access rules, cancel, logs, events."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

from ..admission import check_spec
from ..config import Settings
from ..errors import Forbidden, IllegalTransition, InvalidSpec, JobNotFound
from ..executors.base import Executor, JobEvent
from ..executors.logs import follow, read_tail
from ..models import JobSpec, JobStatus, JobView
from ..quantities import parse_cpu
from ..scheduler.loop import SchedulerLoop
from ..store import JobRecord, Store
from ..store import repository as repo
from .auth import HubUser

log = logging.getLogger(__name__)
MAX_PAGE = 500
ALL_USERS = "*"


def new_job_id() -> str:
    # 16 hex digits: DNS-safe for Kubernetes names, unguessable enough not to invite probing.
    return secrets.token_hex(8)


class JobService:
    def __init__(
        self, settings: Settings, store: Store, executor: Executor, scheduler: SchedulerLoop
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.scheduler = scheduler

    # --- reading ----------------------------------------------------------------------------------

    def view(self, job: JobRecord) -> JobView:
        if job.status is JobStatus.QUEUED:
            waiting = self.scheduler.waiting_for(job.job_id)
            if waiting is None:
                return job.view(message="waiting for the next scheduling cycle")
            return job.view(message=waiting.reason, queue_position=waiting.position)
        return job.view()

    async def visible_job(self, user: HubUser, job_id: str) -> JobRecord:
        """The job if ``user`` may see it; otherwise JobNotFound (we do not reveal that it exists)."""
        if not job_id.isalnum() or len(job_id) > 32:
            raise JobNotFound(job_id)
        job = await self.store.read(lambda s: repo.get_job(s, job_id))
        if job is None or (job.user != user.name and not user.admin):
            raise JobNotFound(job_id)
        return job

    async def list_jobs(
        self, user: HubUser, *, owner: str | None, statuses: list[JobStatus], limit: int, cursor: str | None
    ) -> tuple[list[JobRecord], str | None]:
        if owner is None:
            owner = user.name
        if owner != user.name and not user.admin:
            raise Forbidden(f"you may list only your own jobs (user={user.name})")
        before = None
        if cursor:
            if not cursor.isdigit():
                raise InvalidSpec("cursor is not one this service gave out", field="cursor")
            before = int(cursor)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidSpec(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        who = None if owner == ALL_USERS else owner
        jobs = await self.store.read(
            lambda s: repo.list_jobs(s, user=who, statuses=statuses, limit=limit + 1, before_seq=before)
        )
        next_cursor = str(jobs[limit - 1].seq) if len(jobs) > limit else None
        return jobs[:limit], next_cursor

    def logs(self, job: JobRecord, tail: int | None) -> str:
        return read_tail(self.executor.log_path(job.job_id), tail)

    def follow_logs(self, job: JobRecord) -> AsyncIterator[bytes]:
        async def ended() -> bool:
            current = await self.store.read(lambda s: repo.get_job(s, job.job_id))
            return current is None or current.status.is_terminal()

        return follow(self.executor.log_path(job.job_id), ended)

    # --- changing -----------------------------------------------------------------------------------

    async def submit(self, user: HubUser, spec: JobSpec) -> JobRecord:
        checked = check_spec(
            spec, settings=self.settings, username=user.name, inventory=self.executor.inventory()
        )
        values = repo.new_job_values(
            job_id=new_job_id(),
            user=user.name,
            groups=list(user.groups),
            name=checked.name,
            priority=checked.priority.value,
            gpu_required=bool(checked.gpu_required),
            gpu_count=checked.gpus_wanted,
            gpu_type=checked.gpu_type,
            cpu_request=parse_cpu(checked.cpu_limit) if checked.cpu_limit else 0.0,
            spec=checked.model_dump(mode="json", exclude_none=True),
        )
        job = await self.store.add_job(values)
        self.scheduler.queue.add(job)
        self.scheduler.wake()
        return job

    async def cancel(self, user: HubUser, job_id: str) -> JobRecord:
        job = await self.visible_job(user, job_id)
        if job.status.is_terminal():
            raise IllegalTransition(f"job {job_id} has already ended ({job.status.value}); nothing to cancel")
        cancelled = await self.store.write(
            lambda s: repo.transition(
                s, job_id, JobStatus.CANCELLED, reason="Cancelled", message=f"cancelled by {user.name}"
            )
        )
        self.scheduler.queue.discard(job_id)
        if job.status in JobStatus.active():
            await self.executor.cancel(cancelled)
        self.scheduler.wake()
        return cancelled

    async def apply_event(self, event: JobEvent) -> None:
        """Record what an executor reports, through the transition guard."""
        fields: dict[str, object] = {}
        if event.attempts is not None:
            fields["attempts"] = event.attempts
        if event.status is JobStatus.RUNNING and event.at:
            fields["started_at"] = event.at
        if event.status.is_terminal():
            fields.update(reason=event.reason, message=event.message, exit_code=event.exit_code)
            if event.at:
                fields["finished_at"] = event.at
        if event.status is JobStatus.QUEUED:
            fields["message"] = event.message
        try:
            job = await self.store.write(lambda s: repo.transition(s, event.job_id, event.status, **fields))
            if job.status is JobStatus.QUEUED:
                self.scheduler.queue.add(job)
        except (IllegalTransition, JobNotFound) as exc:
            # A late report for a job already decided (cancelled, say): the store keeps its answer.
            log.debug("ignored event for %s: %s", event.job_id, exc)
        if event.status.is_terminal() or event.status is JobStatus.QUEUED:
            self.scheduler.wake()

"""What the routes do, apart from HTTP: submit, look up with access rules, cancel, logs, events."""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping

from sqlalchemy.orm import Session

from ..admission import check_spec
from ..config import Settings
from ..errors import Forbidden, IllegalTransition, InvalidSpec, JobNotFound, LimitExceeded
from ..executors.base import Executor, JobEvent
from ..executors.logs import follow, read_tail
from ..gputypes import family_of
from ..inventory import Inventory
from ..models import JobSpec, JobStatus, JobView
from ..quantities import parse_cpu
from ..quotas import accounting_group, resolve
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


def device_type_of(inventory: Inventory, node: str | None, index: str) -> str | None:
    for candidate in inventory.nodes:
        if candidate.name == node:
            return next((d.gpu_type for d in candidate.devices if d.index == index), None)
    return None


def cost_per_gpu_hour(costs: Mapping[str, float], gpu_type: str) -> float:
    """The configured rate for a type: exact, then its family, then 'default', else 0."""
    for key in (gpu_type, family_of(gpu_type), "default"):
        if key in costs:
            return costs[key]
    return 0.0


class JobService:
    def __init__(
        self, settings: Settings, store: Store, executor: Executor, scheduler: SchedulerLoop
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.scheduler = scheduler
        self._submitting: dict[str, int] = defaultdict(int)

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
        rule = resolve(self.settings.quotas, user.name, user.groups)
        pools = (
            [(p.gpu_type, p.gpus_per_node) for p in self.settings.pools]
            if self.executor.supports_pools
            else []
        )
        checked = check_spec(
            spec,
            settings=self.settings,
            username=user.name,
            inventory=self.executor.inventory(),
            rule=rule,
            pools=pools,
        )
        queued = self.scheduler.queue.count_for(user.name) + self._submitting[user.name]
        if rule.max_queued_jobs is not None and queued >= rule.max_queued_jobs:
            raise LimitExceeded(
                f"quota: {user.name} has {queued} of {rule.max_queued_jobs} jobs queued; "
                "wait for some to start or cancel some"
            )
        values = repo.new_job_values(
            job_id=new_job_id(),
            user=user.name,
            groups=list(user.groups),
            account_group=accounting_group(user.groups, self.settings.group_shares),
            name=checked.name,
            priority=checked.priority,
            gpu_required=bool(checked.gpu_required),
            gpu_count=checked.gpus_wanted,
            gpu_type=checked.gpu_type,
            cpu_request=parse_cpu(checked.cpu_limit) if checked.cpu_limit else 0.0,
            timeout_seconds=checked.timeout_seconds,
            spec=checked.model_dump(mode="json", exclude_none=True),
        )
        # Counted while the write is in flight, so concurrent submissions cannot pass the limit together.
        self._submitting[user.name] += 1
        try:
            job = await self.store.add_job(values)
        finally:
            self._submitting[user.name] -= 1
        self.scheduler.queue.add(job)
        self.scheduler.wake()
        return job

    def _usage_writer(self, job_id: str, to: JobStatus, **fields: object) -> Callable[[Session], JobRecord]:
        """A store write that moves a job to a final state and records what it used, atomically."""
        inventory = self.executor.inventory()
        costs = self.settings.gpu_hour_costs

        def work(session: Session) -> JobRecord:
            job = repo.transition(session, job_id, to, **fields)
            device_type = device_type_of(inventory, job.node, job.gpus[0]) if job.gpus else None
            rate = cost_per_gpu_hour(costs, device_type or job.gpu_type)
            repo.record_usage(session, job, device_type=device_type, cost_per_gpu_hour=rate)
            return job

        return work

    def _remember_usage(self, job: JobRecord) -> None:
        if job.started_at is not None and job.finished_at is not None and job.gpu_count:
            seconds = job.gpu_count * max(0.0, (job.finished_at - job.started_at).total_seconds())
            self.scheduler.usage.add(job.user, job.account_group, seconds, job.finished_at)

    async def cancel(self, user: HubUser, job_id: str) -> JobRecord:
        job = await self.visible_job(user, job_id)
        if job.status.is_terminal():
            raise IllegalTransition(f"job {job_id} has already ended ({job.status.value}); nothing to cancel")
        cancelled = await self.store.write(
            self._usage_writer(
                job_id, JobStatus.CANCELLED, reason="Cancelled", message=f"cancelled by {user.name}"
            )
        )
        self._remember_usage(cancelled)
        self.scheduler.queue.discard(job_id)
        if job.status in JobStatus.active():
            await self.executor.cancel(cancelled)
        self.scheduler.wake()
        return cancelled

    async def apply_event(self, event: JobEvent) -> None:
        """Record what an executor reports, through the transition guard."""
        if event.status is JobStatus.PENDING or event.news:
            news: dict[str, object] = {"message": event.message}
            if event.attempts is not None:
                news["attempts"] = event.attempts
            await self.store.write(
                lambda s: repo.update_fields(s, event.job_id, while_status=event.status, **news)
            )
            return
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
            if event.status.is_terminal():
                job = await self.store.write(self._usage_writer(event.job_id, event.status, **fields))
                self._remember_usage(job)
            else:
                job = await self.store.write(
                    lambda s: repo.transition(s, event.job_id, event.status, **fields)
                )
            if job.status is JobStatus.QUEUED:
                self.scheduler.queue.add(job)
        except (IllegalTransition, JobNotFound) as exc:
            # A late report for a job already decided (cancelled, say): the store keeps its answer.
            log.debug("ignored event for %s: %s", event.job_id, exc)
        if event.status.is_terminal() or event.status is JobStatus.QUEUED:
            self.scheduler.wake()

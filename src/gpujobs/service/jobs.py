"""What the routes do, apart from HTTP: submit, look up with access rules, cancel, logs."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi.responses import Response

from ..admission import check_spec, cpu_and_memory
from ..config import Settings
from ..errors import Forbidden, InvalidSpec, JobNotFound, LimitExceeded
from ..executors.base import Executor
from ..executors.logs import follow_file, read_tail_info
from ..models import JobLogs, JobSpec, JobStatus, JobView
from ..quotas import accounting_group, resolve
from ..reconciler.endings import cancelling, remember_usage
from ..scheduler.loop import SchedulerLoop
from ..store import JobRecord, Store
from ..store import repository as repo
from ..store.database import Published
from .auth import HubUser
from .responses import envelope

log = logging.getLogger(__name__)
MAX_PAGE = 500
ALL_USERS = "*"
MAX_IDEMPOTENCY_KEY = 255
STOP_NOW_SECONDS = 2.0  # how long a cancel waits for the executor's first stop before answering
TAILS_AT_ONCE = 2


def new_job_id() -> str:
    # 16 hex digits: DNS-safe for Kubernetes names, unguessable enough not to invite probing.
    return secrets.token_hex(8)


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    # Header values arrive as Latin-1 text (a UTF-8 key as its bytes): refuse only control characters.
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or any(ch < " " or ch == "\x7f" for ch in key):
        raise InvalidSpec(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters, none of them control characters",
            field="Idempotency-Key",
        )
    return key


def body_hash(spec: JobSpec) -> str:
    """What makes two submissions the same: the spec as parsed (a field left out and the same field sent
    with its default are the same), before path resolution, which may change between a request and
    its retry."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job: JobRecord
    created: bool  # False: an earlier request with the same Idempotency-Key made it


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        executor: Executor,
        scheduler: SchedulerLoop,
        on_cancel: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.scheduler = scheduler
        self.on_cancel = on_cancel  # the reconciler's wake: a cancelled job's processes stop at once
        self._submitting: dict[str, int] = defaultdict(int)
        # job id → (set when the store records its end, how many follow its log)
        self._ends: dict[str, tuple[asyncio.Event, int]] = {}
        self._tail_slots = asyncio.Semaphore(TAILS_AT_ONCE)

    # --- derived from the store's writes ------------------------------------------------------------

    def on_commit(self, changes: list[Published]) -> None:
        """Wake log followers of jobs that are over: ended, and nothing of them runs any more (a
        cancelled job's processes may still write while they stop: "saving a checkpoint...")."""
        for change in changes:
            if isinstance(change, JobRecord) and change.status.is_terminal() and not change.holding:
                watched = self._ends.get(change.job_id)
                if watched is not None:
                    watched[0].set()

    # --- reading ----------------------------------------------------------------------------------

    def view(self, job: JobRecord) -> JobView:
        if job.status is JobStatus.QUEUED:
            waiting = self.scheduler.waiting_for(job.job_id)
            if waiting is None:
                return job.view(message="waiting for the next scheduling cycle")
            return job.view(message=waiting.reason, queue_position=waiting.position)
        if job.stopping:
            return job.view(message=f"{job.message or job.status.value}; its processes are being stopped")
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
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
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

    async def logs_answer(self, job: JobRecord, tail: int | None) -> Response:
        """The whole ``JobLogs`` answer (read, serialised, wrapped in the envelope) made in a worker
        thread: megabytes of text never pass through the event loop.  At most a few at once: each holds
        megabytes several times over, and a burst of them must not swell the service."""
        path = self.executor.log_path(job.job_id)

        def answer() -> Response:
            found = read_tail_info(path, tail)
            logs = JobLogs(job_id=job.job_id, status=job.status, logs=found.text, truncated=found.truncated)
            return envelope(logs.model_dump_json().encode(), f"job {job.job_id} is {job.status.value}")

        async with self._tail_slots:
            return await asyncio.to_thread(answer)

    async def follow_logs(self, job: JobRecord) -> AsyncIterator[bytes]:
        ended, followers = self._ends.get(job.job_id, (asyncio.Event(), 0))
        self._ends[job.job_id] = (ended, followers + 1)
        try:
            # Checked after the event is registered: an end recorded before is seen here, one after it
            # sets the event.
            current = await self.store.read(lambda s: repo.get_job(s, job.job_id))
            if current is None or (current.status.is_terminal() and not current.holding):
                ended.set()
            async for chunk in follow_file(self.executor.log_path(job.job_id), ended):
                yield chunk
        finally:
            event, followers = self._ends[job.job_id]
            if followers <= 1:
                del self._ends[job.job_id]
            else:
                self._ends[job.job_id] = (event, followers - 1)

    # --- changing -----------------------------------------------------------------------------------

    async def submit(self, user: HubUser, spec: JobSpec, idempotency_key: str | None = None) -> Submitted:
        key = check_idempotency_key(idempotency_key)
        fingerprint = body_hash(spec) if key else ""
        if key:
            earlier = await self.store.read(
                lambda s: repo.job_for_idempotency_key(s, user.name, key, fingerprint)
            )
            if earlier is not None:
                return Submitted(earlier, created=False)
        refusal = self.executor.account_problem(user.name)
        if refusal:
            raise Forbidden(refusal)
        rule = resolve(self.settings.quotas, user.name, user.groups)
        pools = (
            [(p.gpu_type, p.gpus_per_node) for p in self.settings.pools]
            if self.executor.supports_pools
            else []
        )
        view = self.executor.view_state()
        never_seen = view.stale and view.synced_at is None  # started while the cluster was away
        check = functools.partial(
            check_spec,
            spec,
            settings=self.settings,
            username=user.name,
            inventory=None if never_seen else self.executor.inventory(),
            rule=rule,
            pools=pools,
        )
        # Resolving paths touches the disk (a slow or hung mount must not hold the event loop); an
        # inline script needs no disk, and the hot path saves two thread hops.
        touches_disk = spec.script_path is not None or spec.working_dir is not None
        checked = await asyncio.to_thread(check) if touches_disk else check()
        queued = self.scheduler.queue.count_for(user.name) + self._submitting[user.name]
        if rule.max_queued_jobs is not None and queued >= rule.max_queued_jobs:
            raise LimitExceeded(
                f"quota: {user.name} has {queued} of {rule.max_queued_jobs} jobs queued; "
                "wait for some to start or cancel some"
            )
        cpu, memory = cpu_and_memory(checked)
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
            cpu_request=cpu,
            memory_request=memory,
            timeout_seconds=checked.timeout_seconds,
            spec=checked.model_dump(mode="json", exclude_none=True),
        )
        # Counted while the write is in flight, so concurrent submissions cannot pass the limit together.
        self._submitting[user.name] += 1
        try:
            if key:
                job, created = await self.store.write(
                    lambda s: repo.add_job_once(s, values, key=key, body_hash=fingerprint)
                )
            else:
                job, created = await self.store.add_job(values), True
        finally:
            self._submitting[user.name] -= 1
        self.scheduler.wake()
        return Submitted(job, created)

    async def cancel(self, user: HubUser, job_id: str) -> JobRecord:
        """Record the wish (``cancelled``, answered at once); the reconciler stops what runs and frees the
        GPUs once the executor confirms the processes are gone."""
        await self.visible_job(user, job_id)
        inventory = self.executor.inventory()
        change = await self.store.write(
            cancelling(job_id, user.name, inventory, self.settings.gpu_hour_costs)
        )
        remember_usage(self.scheduler.usage, change)
        if change.after.holding and not change.before.status.is_terminal():
            await self._stop_now(change.after)
            self.on_cancel()
        self.scheduler.wake()
        return change.after

    async def _stop_now(self, job: JobRecord) -> None:
        """Tell the executor before answering, so that a launch in flight never starts the job's code
        (the local executor leaves a tombstone its runner checks).  Best effort: the reconciler asks
        again on every pass until the executor confirms the job is gone."""
        try:
            await asyncio.wait_for(self.executor.stop(job), timeout=STOP_NOW_SECONDS)
        except Exception as exc:  # recorded already; the reconciler carries it out
            log.info("job %s: the stop on cancel did not finish (%s); retried", job.job_id, exc)

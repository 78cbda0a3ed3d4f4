"""The reconciler: on every pass, the jobs the store says hold resources, what the executor observes of
them, and one step each toward agreement (``decide``).

- **Level-triggered.**  Nothing is remembered between passes but what is in flight: a step that failed
  (the executor raised, the store refused the write) is simply decided again on the next pass, so an
  observed end is retried until it is stored and never lost.
- **One step per job at a time, jobs independent.**  Each step runs as its own task; a job with a step
  in flight is skipped by later passes, and one job's slow launch or error never holds up the others.
- **Wishes first.**  A launch is recorded (``launched_at``) before the executor is asked, with a
  compare-and-set that a cancel makes fail; a cancel is recorded first and carried out here.
- **GPUs are freed only on the executor's word**: a job that ended in the store keeps its node and GPUs
  until ``observe`` says nothing of it runs any more (``release``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import Settings
from ..errors import GpujobsError, IllegalTransition, JobNotFound
from ..executors.base import Executor, LaunchError, Observation, Unreachable
from ..models import JobStatus
from ..scheduler.usage import UsageTracker
from ..store import Store
from ..store import repository as repo
from ..store.live import LiveJobs
from ..store.records import JobRecord
from .decide import Action, Step, decide, ended_before_the_stop
from .endings import ending, remember_usage

log = logging.getLogger(__name__)
# A launch that raised something other than LaunchError (passing trouble) is tried again after 0.2 s,
# then twice as long each time, at most 10 s apart (longer if the other side asked, with Retry-After),
# until ``launch_retry_seconds`` have passed: then the job fails as LaunchFailed with the last error.
LAUNCH_BACKOFF = (0.2, 10.0)
# A step that failed is tried again after 0.1 s, then twice as long each time, at most 2 s apart: an end
# held back by a store outage is recorded within 2 s of the store taking writes again.
STEP_BACKOFF = 0.1
MAX_STEP_BACKOFF = 2.0


@dataclass(frozen=True)
class _Trouble:
    text: str  # what went wrong last
    failures: int  # steps failed in a row
    retry_at: float  # monotonic time before which the job is left alone


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Reconciler:
    def __init__(
        self,
        store: Store,
        live: LiveJobs,
        executor: Executor,
        settings: Settings,
        usage: UsageTracker,
        on_release: Callable[[], None],
    ) -> None:
        self.store = store
        self.live = live
        self.executor = executor
        self.settings = settings
        self.usage = usage
        self.on_release = on_release
        self.observe_problem: str | None = None
        self._busy: dict[str, asyncio.Task[bool]] = {}
        # Jobs whose last step failed: a failing step backs off per job (a store outage must not turn
        # into a busy loop, nor a Kubernetes log download every pass) and is logged once per kind.
        self._trouble: dict[str, _Trouble] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.launch_backoff = LAUNCH_BACKOFF
        self.step_backoff, self.max_step_backoff = STEP_BACKOFF, MAX_STEP_BACKOFF

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpujobs-reconciler")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._busy.values()) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.executor.observe_interval)
            self._wake.clear()
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a pass must not end the loop: the next pass decides again
                log.exception("reconciler pass failed")

    async def pass_once(self) -> None:
        """Look at every job that holds resources and is not busy; start one step for each that needs
        one.  Returns without waiting for the steps (``settle`` waits, for tests)."""
        now = time.monotonic()
        holding = self.live.holding()
        jobs = [job for job in holding if job.job_id not in self._busy and self._may_try(job.job_id, now)]
        self._forget_gone()
        if not holding:
            self.observe_problem = None  # nothing to observe: nothing can be failing
        if not jobs:
            return
        try:
            seen = await self.executor.observe(jobs)
            self.observe_problem = None
        except Exception as exc:  # decide without observations: only launches proceed
            problem = f"{exc.__class__.__name__}: {exc}"
            if problem != self.observe_problem:  # once, not every pass
                log.warning("the executor could not observe its jobs: %s", problem)
            self.observe_problem = problem
            seen = {}
        for looked_at in jobs:
            # The record as it is now: the store may have moved on while the executor was asked (a
            # cancel, say); every step is a compare-and-set anyway, this only spares wasted ones.
            job = self.live.get(looked_at.job_id)
            if job is None or job.job_id in self._busy:
                continue
            step = decide(job, seen.get(job.job_id))
            if step.action is not Action.NOTHING:
                self._start(job, step)

    async def settle(self) -> None:
        """Wait until no step is in flight (tests drive passes one at a time)."""
        while self._busy:
            await asyncio.gather(*self._busy.values(), return_exceptions=True)

    def _start(self, job: JobRecord, step: Step) -> None:
        name = f"gpujobs-{step.action.value}-{job.job_id}"
        task = asyncio.create_task(self._carry_out(job, step), name=name)
        self._busy[job.job_id] = task

        def done(finished: asyncio.Task[bool]) -> None:
            if self._busy.get(job.job_id) is finished:
                del self._busy[job.job_id]
            # A step that worked may have made the next one possible: look again soon.  Not after a
            # failure (a store outage would become a busy loop) nor after a stop (it takes its time).
            succeeded = not finished.cancelled() and finished.result()
            if succeeded and step.action is not Action.STOP:
                self.wake()

        task.add_done_callback(done)

    async def _carry_out(self, job: JobRecord, step: Step) -> bool:
        """Carry out one step; False when it failed (it is decided again on the next pass)."""
        try:
            if step.action is Action.LAUNCH:
                await self._launch(job)
            elif step.action is Action.RECORD_RUNNING:
                assert step.observation is not None
                await self._record_running(job, step.observation)
            elif step.action is Action.RECORD_END:
                assert step.observation is not None
                await self._record_end(job, step.observation)
            elif step.action is Action.NEWS:
                await self._news(job, step)
            elif step.action is Action.STOP:
                await self.executor.stop(job)
            elif step.action is Action.RELEASE:
                await self._release(job, step.observation)
        except asyncio.CancelledError:
            raise
        except (IllegalTransition, JobNotFound) as exc:
            # The store moved on meanwhile (a cancel won the race): the next pass decides from there.
            log.debug("job %s: %s skipped: %s", job.job_id, step.action.value, exc)
        except Exception as exc:
            self._failed(job, step, exc)
            return False
        self._trouble.pop(job.job_id, None)
        return True

    def _may_try(self, job_id: str, now: float) -> bool:
        trouble = self._trouble.get(job_id)
        return trouble is None or trouble.retry_at <= now

    def _forget_gone(self) -> None:
        """Drop what is kept about jobs that no longer hold anything."""
        for job_id in [job_id for job_id in self._trouble if self.live.get(job_id) is None]:
            del self._trouble[job_id]

    def _failed(self, job: JobRecord, step: Step, exc: Exception) -> None:
        text = exc.message if isinstance(exc, GpujobsError) else f"{exc.__class__.__name__}: {exc}"
        before = self._trouble.get(job.job_id)
        if before is None or before.text != text:  # once per job and kind of trouble, not every pass
            log.warning(
                "job %s: %s failed (%s); trying again on the next pass", job.job_id, step.action.value, text
            )
        failures = (before.failures if before else 0) + 1
        delay = min(self.max_step_backoff, self.step_backoff * 2 ** (failures - 1))
        self._trouble[job.job_id] = _Trouble(text, failures, time.monotonic() + delay)

    # --- the steps --------------------------------------------------------------------------------

    async def _launch(self, job: JobRecord) -> None:
        job = await self.store.write(lambda s: repo.mark_launched(s, job.job_id))
        began = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.executor.launch(job)
            except asyncio.CancelledError:
                raise
            except LaunchError as exc:
                failure = str(exc)
                break
            except Exception as exc:
                known = isinstance(exc, (GpujobsError, Unreachable))
                text = exc.message if known else f"{exc.__class__.__name__}: {exc}"  # type: ignore[attr-defined]
                log.warning("job %s: launch attempt %d failed: %s", job.job_id, attempt, text)
                delay = next_launch_delay(
                    attempt,
                    time.monotonic() - began,
                    self.launch_backoff,
                    self.settings.launch_retry_seconds,
                    getattr(exc, "retry_after", None),
                )
                if delay is None:
                    spent = time.monotonic() - began
                    failure = f"the {self.executor.name} executor could not take it in {spent:.0f} s "
                    failure += f"({attempt} tries); the last error: {text}"
                    break
                with contextlib.suppress(Exception):  # news only: the retries go on without it
                    await self._say(job, f"starting it is taking longer: {text}; trying again")
                await asyncio.sleep(delay)
                current = self.live.get(job.job_id)
                if current is None or current.status is not JobStatus.PENDING:
                    return  # cancelled meanwhile: never start it now (the next pass stops what is left)
                continue
            if attempt > 1:  # handed over: the news of the trouble is over (news only: it may fail)
                with contextlib.suppress(Exception):
                    await self._say(job, None)
            return
        log.warning("job %s could not be launched: %s", job.job_id, failure)
        await self._end(
            job,
            JobStatus.FAILED,
            only_from=(JobStatus.PENDING,),
            reason="LaunchFailed",
            message=failure,
            # Whatever a failed hand-over may have left behind is stopped, and the GPUs freed, on the
            # executor's word.
            holding=True,
        )

    async def _say(self, job: JobRecord, message: str | None) -> None:
        """Tell the owner of a pending job why it is not running yet (None: no more news)."""
        current = self.live.get(job.job_id)
        if current is not None and current.message != message:
            await self.store.write(
                lambda s: repo.update_fields(s, job.job_id, while_status=JobStatus.PENDING, message=message)
            )

    async def _record_running(self, job: JobRecord, seen: Observation) -> None:
        fields: dict[str, object] = {"started_at": seen.started_at or _now(), "message": None}
        if seen.attempts is not None:
            fields["attempts"] = seen.attempts
        await self.store.write(
            lambda s: repo.change(s, job.job_id, JobStatus.RUNNING, only_from=(JobStatus.PENDING,), **fields)
        )

    async def _record_end(self, job: JobRecord, seen: Observation) -> None:
        assert seen.status is not None
        await self.executor.collect(job)
        fields: dict[str, object] = {
            "reason": seen.reason,
            "message": seen.message,
            "exit_code": seen.exit_code,
            "finished_at": seen.finished_at or _now(),
        }
        if seen.attempts is not None:
            fields["attempts"] = seen.attempts
        if job.started_at is None and seen.started_at is not None:
            fields["started_at"] = seen.started_at
        # Processes that are still going keep the GPUs until a later pass finds them gone (release).
        fields["holding"] = not seen.settled
        await self._end(job, seen.status, only_from=(JobStatus.PENDING, JobStatus.RUNNING), **fields)

    async def _end(self, job: JobRecord, to: JobStatus, **fields: object) -> None:
        inventory = self.executor.inventory()
        costs = self.settings.gpu_hour_costs
        change = await self.store.write(ending(job.job_id, to, inventory, costs, **fields))  # type: ignore[arg-type]
        remember_usage(self.usage, change)
        if not change.after.holding:
            self.on_release()

    async def _news(self, job: JobRecord, step: Step) -> None:
        fields: dict[str, object] = {"message": step.message}
        if step.observation is not None and step.observation.attempts is not None:
            fields["attempts"] = step.observation.attempts
        await self.store.write(lambda s: repo.update_fields(s, job.job_id, while_status=job.status, **fields))

    async def _release(self, job: JobRecord, seen: Observation | None) -> None:
        await self.executor.collect(job)
        note = ended_before_the_stop(job, seen) if seen is not None else None
        message = f"{job.message}; {note}" if note and job.message else note
        released = await self.store.write(lambda s: repo.release(s, job.job_id, message=message))
        if released is not None:
            self.on_release()


def next_launch_delay(
    attempt: int, elapsed: float, backoff: tuple[float, float], budget: float, retry_after: float | None
) -> float | None:
    """How long to wait before try ``attempt + 1`` of a launch, or None when the time for it is over.
    ``backoff``: (first pause, longest pause); ``retry_after``: what the other side asked for."""
    first, longest = backoff
    delay = min(longest, first * 2 ** (attempt - 1))
    if retry_after is not None:
        delay = max(delay, retry_after)
    if elapsed + delay > budget:
        return None
    return delay

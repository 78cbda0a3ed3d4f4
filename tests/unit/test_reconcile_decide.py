"""The reconciler's table (``reconciler.decide``): what it does for each state the store may hold and
each thing the executor may see.  Pure: records and observations in, a step out."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from builders import stored_job
from gpujobs.executors.base import ABSENT, STARTING, Observation, Phase
from gpujobs.models import JobStatus
from gpujobs.reconciler import Action, decide
from gpujobs.reconciler.decide import ended_before_the_stop
from gpujobs.store.records import JobRecord

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
RUNNING = Observation(Phase.RUNNING, started_at=NOW, attempts=1)
ENDED = Observation(Phase.ENDED, JobStatus.COMPLETED, exit_code=0)
LOST = Observation.lost("gone")


def job(status: JobStatus, *, launched: bool = True, holding: bool | None = None, **fields) -> JobRecord:
    holds = status in (JobStatus.PENDING, JobStatus.RUNNING) if holding is None else holding
    return stored_job(
        status=status, gpus=("0",), launched_at=NOW if launched else None, holding=holds, **fields
    )


@pytest.mark.parametrize(
    ("record", "seen", "action"),
    [
        # Not yet handed over: launch, whatever the executor says (it has nothing of it).
        (job(JobStatus.PENDING, launched=False), None, Action.LAUNCH),
        (job(JobStatus.PENDING, launched=False), ABSENT, Action.LAUNCH),
        # Handed over, but the executor never got it (a crash between the two writes): again.
        (job(JobStatus.PENDING), ABSENT, Action.LAUNCH),
        (job(JobStatus.PENDING), STARTING, Action.NOTHING),
        (job(JobStatus.PENDING), RUNNING, Action.RECORD_RUNNING),
        (job(JobStatus.PENDING), ENDED, Action.RECORD_END),  # ended between two looks
        (job(JobStatus.RUNNING, attempts=1), RUNNING, Action.NOTHING),
        (job(JobStatus.RUNNING), ENDED, Action.RECORD_END),
        (job(JobStatus.RUNNING), LOST, Action.RECORD_END),
        (job(JobStatus.RUNNING), ABSENT, Action.RECORD_END),  # forgotten: Lost, not running for ever
        # The executor could not say: wait for the next pass (never guess an end).
        (job(JobStatus.RUNNING), None, Action.NOTHING),
        (job(JobStatus.PENDING), None, Action.NOTHING),
        # Cancelled while it may run: stop until the executor says it is gone, then free its GPUs.
        (job(JobStatus.CANCELLED, holding=True), RUNNING, Action.STOP),
        (job(JobStatus.CANCELLED, holding=True), STARTING, Action.STOP),
        (job(JobStatus.CANCELLED, holding=True), ENDED, Action.RELEASE),
        (job(JobStatus.CANCELLED, holding=True), ABSENT, Action.RELEASE),
        (job(JobStatus.CANCELLED, holding=True), None, Action.NOTHING),
        (job(JobStatus.FAILED, holding=True), ABSENT, Action.RELEASE),
        # Done and released, or still queued: not the reconciler's business.
        (job(JobStatus.COMPLETED, holding=False), RUNNING, Action.NOTHING),
        (job(JobStatus.QUEUED, launched=False, holding=False), None, Action.NOTHING),
    ],
)
def test_the_table(record: JobRecord, seen: Observation | None, action: Action) -> None:
    assert decide(record, seen).action is action


def test_a_running_job_that_vanished_is_recorded_as_lost() -> None:
    step = decide(job(JobStatus.RUNNING), ABSENT)
    assert step.observation is not None
    assert (step.observation.status, step.observation.reason) == (JobStatus.FAILED, "Lost")


def test_news_from_the_executor_is_recorded_once() -> None:
    waiting = Observation(Phase.STARTING, message="waiting in the cluster: 0/3 nodes are available")
    assert decide(job(JobStatus.PENDING), waiting).action is Action.NEWS
    assert decide(job(JobStatus.PENDING, message=waiting.message), waiting).action is Action.NOTHING
    retried = Observation(Phase.RUNNING, attempts=2, message="attempt 2 started; attempt 1 ended (Evicted)")
    step = decide(job(JobStatus.RUNNING, attempts=1), retried)
    assert (step.action, step.message) == (Action.NEWS, retried.message)


@pytest.mark.parametrize(
    ("seen", "note"),
    [
        (ENDED, "its code had already finished (exit code 0) before the stop reached it"),
        (
            Observation(Phase.ENDED, JobStatus.FAILED, reason="NonZeroExit", exit_code=3),
            "its code had already ended by itself (exit code 3) before the stop reached it",
        ),
        (Observation(Phase.ENDED, JobStatus.CANCELLED, reason="Cancelled", exit_code=143), None),  # stopped
        (
            Observation(Phase.ENDED, JobStatus.FAILED, reason="Timeout", exit_code=143),
            None,
        ),  # gpujobs ended it
        (LOST, None),  # nothing known of how it ended
        (ABSENT, None),  # it never ran
    ],
)
def test_a_cancelled_job_whose_code_ended_first_says_so_when_released(seen: Observation, note) -> None:
    cancelled = job(JobStatus.CANCELLED, holding=True)
    assert decide(cancelled, seen).action is Action.RELEASE
    assert ended_before_the_stop(cancelled, seen) == note
    # Only a cancel is told apart: a job that ended by itself carries its own end already.
    assert ended_before_the_stop(job(JobStatus.FAILED, holding=True), seen) is None

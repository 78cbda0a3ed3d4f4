"""What to do next for one job, from what the store says and what the executor sees.  Pure.

The store's state is the wish; the observation is the world.  Each row of the table below moves the
world toward the wish, or the record toward the world when the world has moved on by itself:

=====================  ==================  ==============================================================
store says             executor sees       step
=====================  ==================  ==============================================================
pending, not launched  anything            LAUNCH (record the launch first, then hand the job over)
pending, launched      absent              LAUNCH again (nothing ran: the hand-over never happened)
pending                starting            news, if the executor says why it waits
pending / running      running             RECORD_RUNNING (once), news about attempts
pending / running      ended               RECORD_END (collect what outlives the job first)
running                absent              RECORD_END as Lost: nothing of it is left to ask
ended, still holding   starting / running  STOP (repeated each pass: the executor escalates)
ended, still holding   ended / absent      RELEASE: its GPUs are free from now on (a job cancelled
                                           whose code ended by itself first says so)
=====================  ==================  ==============================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..executors.base import Observation, Phase
from ..models import JobStatus
from ..store.records import JobRecord


class Action(str, enum.Enum):
    NOTHING = "nothing"
    LAUNCH = "launch"
    RECORD_RUNNING = "record-running"
    RECORD_END = "record-end"
    NEWS = "news"
    STOP = "stop"
    RELEASE = "release"


@dataclass(frozen=True)
class Step:
    action: Action
    observation: Observation | None = None
    message: str | None = None


NOTHING = Step(Action.NOTHING)
LOST_RUNNING = Observation.lost("the executor has no trace of the job any more")


def decide(job: JobRecord, seen: Observation | None) -> Step:
    """The next step for ``job``; ``seen`` is None when the executor could not say (try again later)."""
    if job.status.is_terminal():
        if not job.holding or seen is None:
            return NOTHING
        if seen.phase in (Phase.ABSENT, Phase.ENDED):
            return Step(Action.RELEASE, seen)
        return Step(Action.STOP, seen)
    if job.status is JobStatus.QUEUED:
        return NOTHING  # the scheduler's, not ours
    if job.status is JobStatus.PENDING and job.launched_at is None:
        return Step(Action.LAUNCH)
    if seen is None:
        return NOTHING
    if seen.phase is Phase.ENDED:
        return Step(Action.RECORD_END, seen)
    if seen.phase is Phase.ABSENT:
        if job.status is JobStatus.PENDING:
            return Step(Action.LAUNCH)
        return Step(Action.RECORD_END, LOST_RUNNING)
    if seen.phase is Phase.RUNNING and job.status is JobStatus.PENDING:
        return Step(Action.RECORD_RUNNING, seen)
    if seen.message and seen.message != job.message:
        return Step(Action.NEWS, seen, seen.message)
    if seen.attempts is not None and seen.attempts > job.attempts and job.status is JobStatus.RUNNING:
        return Step(Action.NEWS, seen, seen.message or job.message)
    return NOTHING


def ended_before_the_stop(job: JobRecord, seen: Observation) -> str | None:
    """What a cancelled job's record must add when its code ended by itself before the stop reached it
    (a cancel is recorded at once, the stop follows): a user must not take "cancelled" to mean its
    outputs are partial when the code ran to its end.  None when the stop ended it, or nothing ran."""
    if job.status is not JobStatus.CANCELLED or seen.phase is not Phase.ENDED:
        return None
    if seen.status is JobStatus.COMPLETED:
        return "its code had already finished (exit code 0) before the stop reached it"
    # Only an exit of the code's own: a timeout, a memory kill or a failed install was gpujobs' doing.
    if seen.status is JobStatus.FAILED and seen.exit_code is not None and seen.reason == "NonZeroExit":
        return f"its code had already ended by itself (exit code {seen.exit_code}) before the stop reached it"
    return None

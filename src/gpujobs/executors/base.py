"""The executor contract.

An executor runs the jobs the store says to run and tells what it sees of them.  It never writes to
the store and never decides a job's state: the reconciler (``gpujobs.reconciler``) compares what the
store says with what ``observe`` reports and records the difference.  Every call may be repeated (after
a failure, a restart, a race), so every call is idempotent, and any exception it raises is turned into
a recorded outcome by the reconciler, never lost.

Life of an executor, as the service uses it:

``start()``
    Discover the inventory and begin watching.  Must not fail when there are no GPUs.
``inventory()`` / ``external_holds()``
    From memory, no I/O: asked on every scheduling cycle and every ``gpu-status`` request.
``launch(job)``
    Start an admitted job on ``job.node`` with exactly ``job.gpus``.  Its identity on the executor is
    derived from ``job.job_id``, so a second call for the same job *adopts* what the first made instead
    of starting it twice.  Returns once the job is handed over (its code may start later).  Raises
    ``LaunchError`` when the job can never be started (nothing of it runs); any other exception is
    taken as passing and the call is retried with backoff.
``observe(jobs)``
    What the executor sees of each job now, as an ``Observation`` per job id: ``ABSENT`` (nothing of it
    here and nothing of it can have run), ``STARTING``, ``RUNNING`` or ``ENDED`` with its outcome (a job
    that vanished without an outcome is ``ENDED`` as ``failed``/``Lost``).  Must not hold the event loop
    (file reads run in a thread); must answer for every job asked, and one job's trouble must not spoil
    the others' answers.
``stop(job)``
    Make the job's processes (all of them) end: a graceful signal, then a kill once the grace period
    has passed.  Called again on every pass until ``observe`` says the job ended or is absent; only then
    are its GPUs free.  Safe for a job that never started or already ended.
``collect(job)``
    Called once an end is observed, before it is recorded: keep what must outlive the job (its whole
    log), clean up what the executor made.  Idempotent.
``log_path(job_id)``
    The file that holds the job's output (kept current while the job runs, kept after it ends).
``problem()``
    Why the executor cannot reach its jobs right now (health reports it), or None.
``view_state()``
    Whether its view is current; a stale view admits nothing (the scheduler) and says so (gpu-status).
``close()``
    Stop watching.  Jobs keep running: a restarted service finds them again through ``observe``.

``wake`` is set by the service: an executor calls it when it learns something may have changed (a
watch event, a process that ended), so the reconciler looks again at once instead of at its next pass.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..inventory import Inventory
from ..models import JobStatus
from ..store.records import JobRecord


class Phase(str, enum.Enum):
    ABSENT = "absent"
    STARTING = "starting"
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True)
class Observation:
    """What an executor sees of one job.  For ``ENDED``: ``status`` is completed, failed or cancelled,
    with ``reason`` (``NonZeroExit``, ``OOMKilled``, ``Timeout``, ``Lost``, ...), a message for people,
    the exit code, and when it started and ended where known.  ``message`` on a job that is not ended
    is news to show (why the cluster has not started it yet, that an attempt was evicted)."""

    phase: Phase
    status: JobStatus | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    attempts: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # For ENDED: whether nothing of the job runs any more.  False while its processes are still being
    # stopped (a Kubernetes Job past its deadline whose pod is still terminating): the end is recorded,
    # and its GPUs stay held until a later observation finds nothing left.
    settled: bool = True

    @classmethod
    def lost(cls, message: str) -> Observation:
        return cls(Phase.ENDED, JobStatus.FAILED, reason="Lost", message=message)


ABSENT = Observation(Phase.ABSENT)
STARTING = Observation(Phase.STARTING)


class LaunchError(Exception):
    """The job can never be started as it is (its spec, a missing namespace ...); nothing of it runs.
    The message says why, to the job's owner."""


class Unreachable(Exception):
    """Passing trouble: the executor's backend did not take the call now (it does not answer, it is
    overloaded).  The reconciler tries again, no sooner than ``retry_after`` seconds when the backend
    said when to come back."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class ViewState:
    """Whether what the executor knows of its nodes and jobs is current.  ``stale``: it cannot be sure
    (it lost touch with the cluster): nothing should be admitted onto it.  ``synced_at``: when it was
    last known to match (None: always current, as a local executor's own view is)."""

    stale: bool = False
    synced_at: datetime | None = None
    reason: str | None = None


CURRENT = ViewState()


def _never_woken() -> None:
    return None


class Executor(abc.ABC):
    name: str
    # Whether admitting a job onto a node the cluster has yet to add makes sense (Kubernetes with an
    # autoscaler: its pod waits Pending until the node comes).
    supports_pools: bool = False
    # How often the reconciler asks ``observe`` when nothing wakes it (seconds).
    observe_interval: float = 0.25
    wake: Callable[[], None] = staticmethod(_never_woken)

    def external_holds(self) -> Mapping[str, Mapping[str, int]]:
        """Per node, how many devices of each type workloads that are not gpujobs jobs hold (a notebook
        server's GPU, another team's pod; none on the local executor)."""
        return {}

    def problem(self) -> str | None:
        return None

    def view_state(self) -> ViewState:
        """How current ``inventory()`` and ``observe`` are (no I/O)."""
        return CURRENT

    def account_problem(self, username: str) -> str | None:
        """Why ``username``'s jobs cannot run here at all (no system account to run them as), or None."""
        return None

    @abc.abstractmethod
    async def start(self) -> None:
        """Discover the inventory and begin watching.  Must not fail for want of GPUs; may raise when
        the executor cannot work at all (the service then does not start)."""

    @abc.abstractmethod
    def inventory(self) -> Inventory:
        """Nodes and devices, from memory (no I/O: asked on every cycle and every request)."""

    @abc.abstractmethod
    async def launch(self, job: JobRecord) -> None:
        """Hand an admitted job over: run it on ``job.node`` with exactly ``job.gpus``.

        Idempotent: the job's identity on the executor comes from ``job.job_id``, so a repeat (after
        an error, a restart) adopts what an earlier call made; never start it twice.  Returns once the
        job is handed over.  Raises ``LaunchError`` when it can never be started (then nothing of it
        may run); any other exception means "try again" (the reconciler retries with backoff)."""

    @abc.abstractmethod
    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        """What the executor sees of each job, by id.  ``ABSENT`` only when nothing of the job can
        have run; a job that vanished without an outcome is ``Observation.lost``.  A job it cannot say
        anything about right now is left out (the reconciler asks again next pass); one job's trouble
        never spoils the others' answers.  Must not hold the event loop.  Changes nothing (a log
        follower may be started)."""

    @abc.abstractmethod
    async def stop(self, job: JobRecord) -> None:
        """Make every process of the job end: a graceful signal first, a kill once the grace period is
        over.  Called on every pass until ``observe`` says the job ended or is absent, so it must be
        cheap to repeat and escalate by itself.  Safe for a job that never started or already ended,
        and for one whose ``launch`` is still in flight: a job stopped before its code started must
        never start it.  May raise: the reconciler calls it again next pass."""

    async def collect(self, job: JobRecord) -> None:  # noqa: B027 - most executors keep nothing extra
        """Called once an end is observed, before it is recorded: keep what must outlive the job (its
        whole log), clean up what the executor made.  Idempotent; may raise (the end is then recorded on
        a later pass)."""

    @abc.abstractmethod
    def log_path(self, job_id: str) -> Path:
        """The file that holds the job's output, current while it runs and kept after it ends."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watching.  Jobs keep running: a restarted service finds them again through
        ``observe``."""

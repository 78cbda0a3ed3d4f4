"""The executor contract.

An executor runs jobs the scheduler has admitted and reports what becomes of them.  The store stays
the one source of truth: executors never write to it; they emit ``JobEvent``s that the service
applies through the store's transition guard (so a late "finished" after a cancel changes nothing).

Life of an executor, called by the service in this order:

``start()``
    Discover the inventory and begin watching.  Must not fail when there are no GPUs.
``recover(active_jobs)``
    Called once after ``start`` with the jobs the store says are ``pending`` or ``running``.  For each
    one: re-attach if it still runs, emit its final state if it ended while we were away, emit
    ``failed``/``Lost`` if it vanished, or emit ``queued`` if it provably never started (so it is
    admitted again; nothing ever runs twice).
``inventory()``
    The current nodes and devices, from memory: no I/O, called on every scheduling cycle and on every
    ``gpu-status`` request.
``launch(job)``
    Start an admitted (``pending``) job on ``job.node`` with exactly ``job.gpus``.  Returns once the
    job is handed over; emits ``running`` when its code starts and a terminal event when it ends.
    Raises ``LaunchError`` when it cannot be started at all.
``cancel(job)``
    Stop the job and everything it started (graceful signal, then kill after a grace period).  The
    service has already recorded ``cancelled``.  Safe to call for a job that already ended.
``log_path(job_id)``
    The file that holds the job's output (the executor keeps it current while the job runs and keeps
    it after the job ends).
``stop()``
    Stop watching.  Jobs keep running: a restarted service re-attaches to them.

An event with status ``pending`` for a job that is pending changes no state: it updates the job's
``message`` (why the cluster has not started it yet).

Events carry: status, reason (``NonZeroExit``, ``OOMKilled``, ``Timeout``, ``Cancelled``, ``Lost``,
``RequirementsFailed``, ...), a message for people, exit code and attempt count.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..inventory import Inventory
from ..models import JobStatus
from ..store.records import JobRecord


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    status: JobStatus
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    attempts: int | None = None
    at: datetime | None = None
    # News about a job that stays in ``status`` (why it still waits, that an attempt was evicted):
    # a message to show, not a transition.  Events for PENDING jobs are always news.
    news: bool = False


EventSink = Callable[[JobEvent], Awaitable[None]]


class LaunchError(Exception):
    """The job could not be started at all; the message says why."""


class Executor(abc.ABC):
    name: str
    # Whether admitting a job onto a node the cluster has yet to add makes sense (Kubernetes with an
    # autoscaler: its pod waits Pending until the node comes).
    supports_pools: bool = False

    def __init__(self, on_event: EventSink) -> None:
        self._emit = on_event

    def external_holds(self) -> Mapping[str, Mapping[str, int]]:
        """Per node, how many devices of each type workloads that are not gpujobs jobs hold (a notebook
        server's GPU, another team's pod; none on the local executor)."""
        return {}

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def recover(self, active_jobs: Sequence[JobRecord]) -> None: ...

    @abc.abstractmethod
    def inventory(self) -> Inventory: ...

    @abc.abstractmethod
    async def launch(self, job: JobRecord) -> None: ...

    @abc.abstractmethod
    async def cancel(self, job: JobRecord) -> None: ...

    @abc.abstractmethod
    def log_path(self, job_id: str) -> Path: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

"""Executors that stand in for a real one in in-process tests of the control loop, named for how they
behave.  Each keeps a small in-memory world (which jobs it has, what runs where) that tests change step
by step, and checks the one rule no executor may ever see broken: two live jobs on one GPU."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from gpujobs.executors.base import ABSENT, STARTING, Executor, LaunchError, Observation, Phase, ViewState
from gpujobs.inventory import Device, Inventory, Node
from gpujobs.models import JobStatus
from gpujobs.store.records import JobRecord

NODE = "fake-node"


class GpuDoubleBooked(AssertionError):
    pass


class FakeExecutor(Executor):
    """Starts jobs at once and keeps them running until a test ends them (``finish``); a stop ends a
    running job as cancelled."""

    name = "fake"
    observe_interval = 0.01

    def __init__(self, log_dir: Path, gpus: int = 1, cpu_cores: float = 4.0) -> None:
        self.log_dir = log_dir
        self.devices = tuple(Device(index=str(i), gpu_type="t4", product="Tesla T4") for i in range(gpus))
        self.cpu_cores = cpu_cores
        self.world: dict[str, Observation] = {}  # what "runs": job id → its state
        self.gpus_of: dict[str, tuple[str, ...]] = {}
        self.launches: list[str] = []  # every launch call, repeats included
        self.stops: list[str] = []
        self.ran_code: set[str] = set()  # jobs whose code started (what a user would see run)
        self.double_bookings: list[str] = []  # checked by the harness when it closes
        self.tombstones: set[str] = set()  # stopped jobs: a launch that comes later never runs them
        self.observe_calls = 0

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def inventory(self) -> Inventory:
        node = Node(name=NODE, devices=self.devices, cpu_cores=self.cpu_cores, memory_bytes=64 * 2**30)
        return Inventory(nodes=(node,), source="fake", updated_at=datetime.now(timezone.utc))

    def live_on(self, gpu: str) -> list[str]:
        return [
            job_id
            for job_id, seen in self.world.items()
            if seen.phase in (Phase.STARTING, Phase.RUNNING) and gpu in self.gpus_of.get(job_id, ())
        ]

    def _check_no_double_booking(self) -> None:
        for device in self.devices:
            if len(self.live_on(device.index)) > 1:
                self.double_bookings.append(f"GPU {device.index} runs {self.live_on(device.index)}")
                raise GpuDoubleBooked(self.double_bookings[-1])

    async def launch(self, job: JobRecord) -> None:
        self.launches.append(job.job_id)
        if job.job_id in self.world:
            return  # adopt: never twice
        if job.job_id in self.tombstones:  # stopped before it could start: it never will
            self.world[job.job_id] = Observation(Phase.ENDED, JobStatus.CANCELLED, reason="Cancelled")
            return
        self.gpus_of[job.job_id] = job.gpus
        self.world[job.job_id] = Observation(Phase.RUNNING, started_at=datetime.now(timezone.utc))
        self.ran_code.add(job.job_id)
        self._check_no_double_booking()

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        self.observe_calls += 1
        return {job.job_id: self.world.get(job.job_id, ABSENT) for job in jobs}

    async def stop(self, job: JobRecord) -> None:
        self.stops.append(job.job_id)
        self.tombstones.add(job.job_id)
        seen = self.world.get(job.job_id)
        if seen is not None and seen.phase is not Phase.ENDED:
            self.world[job.job_id] = Observation(Phase.ENDED, JobStatus.CANCELLED, reason="Cancelled")

    def finish(self, job_id: str, code: int = 0) -> None:
        """The job's code ends by itself."""
        status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
        self.world[job_id] = Observation(
            Phase.ENDED,
            status,
            reason=None if code == 0 else "NonZeroExit",
            exit_code=code,
            finished_at=datetime.now(timezone.utc),
        )

    def log_path(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    async def close(self) -> None:
        pass


class SlowLaunch(FakeExecutor):
    """``launch`` waits until the test lets it go (``release``): a launch in flight, held open."""

    def __init__(self, log_dir: Path, gpus: int = 1) -> None:
        super().__init__(log_dir, gpus)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()  # set while a launch waits at the gate

    async def launch(self, job: JobRecord) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().launch(job)

    def release(self) -> None:
        self.gate.set()


class LaunchRaises(FakeExecutor):
    """``launch`` raises ``error`` the first ``times`` calls (every call when None), then works."""

    def __init__(self, log_dir: Path, error: Exception, times: int | None = None) -> None:
        super().__init__(log_dir)
        self.error = error
        self.times = times
        self.raised = 0

    async def launch(self, job: JobRecord) -> None:
        if self.times is None or self.raised < self.times:
            self.raised += 1
            self.launches.append(job.job_id)
            raise self.error
        await super().launch(job)


class FailingLaunch(LaunchRaises):
    """``launch`` raises ``LaunchError``: this job can never start here."""

    def __init__(self, log_dir: Path, message: str) -> None:
        super().__init__(log_dir, LaunchError(message))


class StaleView(FakeExecutor):
    """Loses touch with its cluster while ``stale`` is set (as a Kubernetes watch does when the API
    server is down): its view says so."""

    def __init__(self, log_dir: Path, gpus: int = 1) -> None:
        super().__init__(log_dir, gpus)
        self.stale = False
        self.synced_at = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)

    def view_state(self) -> ViewState:
        if not self.stale:
            return ViewState(synced_at=datetime.now(timezone.utc))
        return ViewState(True, self.synced_at, "the view of the cluster is stale: the watch of Pods is down")


class NeverStarts(FakeExecutor):
    """Takes the job and never starts its code (a pod that stays Pending), saying why."""

    async def launch(self, job: JobRecord) -> None:
        self.launches.append(job.job_id)
        self.gpus_of[job.job_id] = job.gpus
        self.world.setdefault(
            job.job_id, Observation(Phase.STARTING, message="waiting in the cluster: no node")
        )

    async def stop(self, job: JobRecord) -> None:
        self.stops.append(job.job_id)
        self.world.pop(job.job_id, None)  # never ran: nothing left of it


class StopTakesTime(FakeExecutor):
    """A stopped job's processes linger until the test says they are gone (``processes_gone``)."""

    async def stop(self, job: JobRecord) -> None:
        self.stops.append(job.job_id)  # asked; the job keeps running for now

    def processes_gone(self, job_id: str) -> None:
        self.world[job_id] = Observation(Phase.ENDED, JobStatus.CANCELLED, reason="Cancelled")


class EndEventLost(FakeExecutor):
    """Reports a job's end once and then forgets the job (an executor that kept its outcome only in
    memory, or a cluster that cleaned up the Job): the end must be recorded the first time, or the job
    must at least not stay running for ever."""

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        seen = await super().observe(jobs)
        for job_id, observation in seen.items():
            if observation.phase is Phase.ENDED:
                self.world.pop(job_id, None)  # told once
        return seen


class ObserveFailsFor(FakeExecutor):
    """Cannot say anything about the jobs in ``broken`` (their files unreadable, say): they are left out
    of ``observe``'s answer, while every other job is answered."""

    def __init__(self, log_dir: Path, gpus: int = 1) -> None:
        super().__init__(log_dir, gpus)
        self.broken: set[str] = set()

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        seen = await super().observe(jobs)
        return {job_id: value for job_id, value in seen.items() if job_id not in self.broken}


__all__ = [
    "STARTING",
    "EndEventLost",
    "FailingLaunch",
    "FakeExecutor",
    "GpuDoubleBooked",
    "LaunchRaises",
    "NeverStarts",
    "ObserveFailsFor",
    "SlowLaunch",
    "StopTakesTime",
]

"""The parts a running service holds, built in one place (the app's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Settings
from ..executors.base import Executor
from ..gpustatus import GpuStatusCache
from ..scheduler.loop import SchedulerLoop
from ..store import Store
from .auth import HubAuthenticator
from .jobs import JobService
from .metrics import Metrics


@dataclass
class Runtime:
    settings: Settings
    store: Store
    executor: Executor
    scheduler: SchedulerLoop
    jobs: JobService
    auth: HubAuthenticator
    metrics: Metrics
    version: str
    gpu_status: GpuStatusCache = field(default_factory=GpuStatusCache)

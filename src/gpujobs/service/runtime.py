"""The parts a running service holds, built in one place (the app's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Settings
from ..executors.base import Executor
from ..gpustatus import GpuStatusCache
from ..reconciler import Reconciler
from ..scheduler.loop import SchedulerLoop
from ..store import Store
from ..store.live import LiveJobs
from .audit import AuditLog
from .auth import Authenticator
from .health import LoopLag
from .jobs import JobService
from .metrics import Metrics


@dataclass
class Runtime:
    settings: Settings
    store: Store
    executor: Executor
    live: LiveJobs
    scheduler: SchedulerLoop
    reconciler: Reconciler
    jobs: JobService
    auth: Authenticator
    metrics: Metrics
    version: str
    lag: LoopLag
    audit: AuditLog
    gpu_status: GpuStatusCache = field(default_factory=GpuStatusCache)

"""Prometheus metrics: jobs by state, the queue by priority, how long jobs waited, jobs started and ended
by outcome, GPUs by type, API latency and the event loop's lag.  ``deploy/grafana/gpujobs.json`` charts
them; a test checks that every series it queries is here.

Starts, ends and waits are counted from the store's commits (``on_commit``): each job's start and end is
counted once, whichever write carried it, and only for what happened while this process ran (a restart
starts the counters again, as Prometheus expects of counters).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inventory import Inventory
from ..models import JobStatus
from ..store.database import Published
from ..store.records import JobRecord

# Ended jobs whose end was counted, remembered so that a later write of the same end (the job lets go
# of its GPUs) is not counted again; a few thousand cover any such pair.
_REMEMBERED_ENDS = 4096
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# Any other method a client sends is "other": a label's values must not be the caller's to choose.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.since = datetime.now(timezone.utc)
        self.registry = CollectorRegistry()
        self.jobs = Gauge("gpujobs_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.queue_length = Gauge(
            "gpujobs_queue_length", "Jobs waiting for admission", registry=self.registry
        )
        self.queued_by_priority = Gauge(
            "gpujobs_queued_jobs",
            "Jobs waiting for admission, by priority",
            ["priority"],
            registry=self.registry,
        )
        self.gpus_total = Gauge(
            "gpujobs_gpus_total", "GPUs offered, by type", ["gpu_type"], registry=self.registry
        )
        self.gpus_used = Gauge(
            "gpujobs_gpus_used", "GPUs held by jobs, by type", ["gpu_type"], registry=self.registry
        )
        self.loop_lag = Gauge(
            "gpujobs_event_loop_lag_seconds",
            "How late the service's event loop ran a timer just now (every request waits this long)",
            registry=self.registry,
        )
        self.submit_seconds = Histogram(
            "gpujobs_submit_seconds",
            "Time to accept a submission (validation, durable write)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gpujobs_request_seconds",
            "Time from a request's arrival to its answer's start, by route (a followed log counts "
            "until its first byte)",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.started = Counter(
            "gpujobs_jobs_started",
            "Jobs whose code started, by priority",
            ["priority"],
            registry=self.registry,
        )
        self.ended = Counter(
            "gpujobs_jobs_ended", "Jobs that ended, by outcome", ["outcome"], registry=self.registry
        )
        self.wait_seconds = Histogram(
            "gpujobs_job_wait_seconds",
            "From submission to the code's start, by priority",
            ["priority"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._started_ids: set[str] = set()
        self._ended_ids: OrderedDict[str, None] = OrderedDict()
        self._priorities_shown: set[str] = set()

    def on_commit(self, changes: list[Published]) -> None:
        for change in changes:
            if isinstance(change, JobRecord):
                self._count(change)

    def _count(self, job: JobRecord) -> None:
        if job.status is JobStatus.QUEUED:  # queued again (a retry): its next start counts again
            self._started_ids.discard(job.job_id)
            return
        if job.started_at is not None and job.job_id not in self._started_ids:
            self._started_ids.add(job.job_id)  # a job that ends in the write that starts it counts too
            if job.started_at >= self.since:
                self.started.labels(job.priority).inc()
                waited = (job.started_at - job.created_at).total_seconds()
                self.wait_seconds.labels(job.priority).observe(max(0.0, waited))
        if job.status.is_terminal() and job.job_id not in self._ended_ids:
            self._started_ids.discard(job.job_id)
            self._ended_ids[job.job_id] = None
            if len(self._ended_ids) > _REMEMBERED_ENDS:
                self._ended_ids.popitem(last=False)
            if job.finished_at is None or job.finished_at >= self.since:
                self.ended.labels(job.status.value).inc()

    def render(
        self,
        counts: dict[JobStatus, int],
        inventory: Inventory,
        held: dict[str, set[str]],
        queued_priorities: Iterable[str] = (),
        loop_lag: float = 0.0,
    ) -> bytes:
        self.loop_lag.set(loop_lag)
        for state, count in counts.items():
            self.jobs.labels(state.value).set(count)
        self.queue_length.set(counts.get(JobStatus.QUEUED, 0))
        by_priority = Tally(queued_priorities)
        self._priorities_shown.update(by_priority)
        for priority in self._priorities_shown:  # a priority whose queue emptied reads 0, not its last
            self.queued_by_priority.labels(priority).set(by_priority.get(priority, 0))
        totals: dict[str, int] = {}
        used: dict[str, int] = {}
        for node in inventory.nodes:
            for device in node.devices:
                totals[device.gpu_type] = totals.get(device.gpu_type, 0) + 1
                if device.index in held.get(node.name, set()):
                    used[device.gpu_type] = used.get(device.gpu_type, 0) + 1
        for gpu_type, total in totals.items():
            self.gpus_total.labels(gpu_type).set(total)
            self.gpus_used.labels(gpu_type).set(used.get(gpu_type, 0))
        return generate_latest(self.registry)


class RequestTimer:
    """Observes each HTTP request's time to its answer's start in ``histogram``, by method and route
    template (``/api/k8s/job/{job_id}/status``, never the job's id: the label set stays small)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                method = scope["method"] if scope["method"] in _METHODS else "other"
                self.histogram.labels(method, route).observe(time.perf_counter() - began)
            await send(message)

        await self.app(scope, receive, timed)

"""Prometheus metrics: jobs by state, queue length, GPUs by type, submit latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from ..inventory import Inventory
from ..models import JobStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("gpujobs_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.queue_length = Gauge(
            "gpujobs_queue_length", "Jobs waiting for admission", registry=self.registry
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

    def render(
        self,
        counts: dict[JobStatus, int],
        inventory: Inventory,
        held: dict[str, set[str]],
        loop_lag: float = 0.0,
    ) -> bytes:
        self.loop_lag.set(loop_lag)
        for state, count in counts.items():
            self.jobs.labels(state.value).set(count)
        self.queue_length.set(counts.get(JobStatus.QUEUED, 0))
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

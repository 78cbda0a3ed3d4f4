"""Starts, ends and waits are counted once per job from the store's commits, whatever writes repeat."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from builders import inventory, stored_job
from gpujobs.models import JobStatus
from gpujobs.service.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render({}, inventory(), {}).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_start_and_end_counts_once_and_the_wait_is_observed() -> None:
    metrics = Metrics()
    created = metrics.since + timedelta(seconds=1)
    started = created + timedelta(seconds=42)
    running = stored_job("j1", status=JobStatus.RUNNING, created_at=created, started_at=started)
    metrics.on_commit([running, running])  # the same start written twice (a later sync, say)
    ended = stored_job(
        "j1",
        status=JobStatus.FAILED,
        created_at=created,
        started_at=started,
        finished_at=started + timedelta(seconds=5),
        holding=True,
    )
    metrics.on_commit([ended])
    metrics.on_commit([stored_job("j1", status=JobStatus.FAILED, finished_at=ended.finished_at)])  # let go
    seen = samples(metrics)
    assert seen[("gpujobs_jobs_started_total", (("priority", "normal"),))] == 1
    assert seen[("gpujobs_jobs_ended_total", (("outcome", "failed"),))] == 1
    assert seen[("gpujobs_job_wait_seconds_sum", (("priority", "normal"),))] == 42
    assert seen[("gpujobs_job_wait_seconds_bucket", (("le", "60.0"), ("priority", "normal")))] == 1
    assert seen[("gpujobs_job_wait_seconds_bucket", (("le", "30.0"), ("priority", "normal")))] == 0


def test_a_job_that_ends_in_its_first_write_and_a_retried_job_are_counted() -> None:
    metrics = Metrics()
    at = metrics.since + timedelta(seconds=1)
    quick = stored_job("q", status=JobStatus.COMPLETED, created_at=at, started_at=at, finished_at=at)
    metrics.on_commit([quick])
    retried = stored_job("r", status=JobStatus.RUNNING, created_at=at, started_at=at)
    metrics.on_commit([retried, stored_job("r", status=JobStatus.QUEUED, created_at=at)])
    metrics.on_commit([stored_job("r", status=JobStatus.RUNNING, created_at=at, started_at=at)])
    seen = samples(metrics)
    assert seen[("gpujobs_jobs_started_total", (("priority", "normal"),))] == 3
    assert seen[("gpujobs_jobs_ended_total", (("outcome", "completed"),))] == 1


def test_what_happened_before_this_process_started_is_not_counted_again() -> None:
    """After a restart, the store's jobs are written again as they are re-attached: no new starts."""
    metrics = Metrics()
    before = metrics.since - timedelta(hours=1)
    metrics.on_commit([stored_job("old", status=JobStatus.RUNNING, created_at=before, started_at=before)])
    metrics.on_commit(
        [
            stored_job(
                "old", status=JobStatus.CANCELLED, created_at=before, started_at=before, finished_at=before
            )
        ]
    )
    seen = samples(metrics)
    assert not any(name == "gpujobs_jobs_started_total" for name, _ in seen)
    assert not any(name == "gpujobs_jobs_ended_total" for name, _ in seen)


def test_the_queue_per_priority_drops_to_zero_when_it_empties() -> None:
    metrics = Metrics()
    metrics.render({}, inventory(), {}, ["high", "normal", "normal"])
    text = metrics.render({}, inventory(), {}, []).decode()
    queued = {
        s.labels["priority"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gpujobs_queued_jobs"
    }
    assert queued == {"high": 0, "normal": 0}

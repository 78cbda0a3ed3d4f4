"""Store writes that end a job: the state, and what it used (for usage reports and fair share), in one
transaction.  Shared by a cancel (the user's wish) and the reconciler (an end the executor observed)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from ..errors import IllegalTransition
from ..gputypes import family_of
from ..inventory import Inventory
from ..models import JobStatus
from ..scheduler.usage import UsageTracker
from ..store import repository as repo
from ..store.records import JobRecord


def device_type_of(inventory: Inventory, node: str | None, index: str) -> str | None:
    for candidate in inventory.nodes:
        if candidate.name == node:
            return next((d.gpu_type for d in candidate.devices if d.index == index), None)
    return None


def cost_per_gpu_hour(costs: Mapping[str, float], gpu_type: str) -> float:
    """The configured rate for a type: exact, then its family, then 'default', else 0."""
    for key in (gpu_type, family_of(gpu_type), "default"):
        if key in costs:
            return costs[key]
    return 0.0


def _record_usage(session: Session, job: JobRecord, inventory: Inventory, costs: Mapping[str, float]) -> None:
    device_type = device_type_of(inventory, job.node, job.gpus[0]) if job.gpus else None
    rate = cost_per_gpu_hour(costs, device_type or job.gpu_type)
    repo.record_usage(session, job, device_type=device_type, cost_per_gpu_hour=rate)


def ending(
    job_id: str,
    to: JobStatus,
    inventory: Inventory,
    costs: Mapping[str, float],
    *,
    only_from: Iterable[JobStatus] | None = None,
    **fields: Any,
) -> Callable[[Session], repo.Change]:
    """A write that moves a job to a final state and records its usage."""

    def work(session: Session) -> repo.Change:
        change = repo.change(session, job_id, to, only_from=only_from, **fields)
        _record_usage(session, change.after, inventory, costs)
        return change

    return work


def cancelling(
    job_id: str, by: str, inventory: Inventory, costs: Mapping[str, float]
) -> Callable[[Session], repo.Change]:
    """The user's wish, recorded: ``cancelled`` at once (a repeat changes nothing).  A job that may have
    been handed to the executor keeps its node and GPUs (``holding``) until the reconciler has its
    processes stopped and the executor confirms they are gone."""

    def work(session: Session) -> repo.Change:
        current = repo.get_job(session, job_id)
        if current is not None and current.status is JobStatus.CANCELLED:
            return repo.Change(current, current)
        if current is not None and current.status.is_terminal():
            raise IllegalTransition(
                f"job {job_id} has already ended ({current.status.value}); nothing to cancel"
            )
        # Not yet handed over: the launcher's own compare-and-set (mark_launched) will now fail, so
        # nothing of the job can start.
        handed_over = current is not None and (
            current.launched_at is not None or current.status is JobStatus.RUNNING
        )
        return ending(
            job_id,
            JobStatus.CANCELLED,
            inventory,
            costs,
            reason="Cancelled",
            message=f"cancelled by {by}",
            holding=handed_over,
        )(session)

    return work


def remember_usage(usage: UsageTracker, change: repo.Change) -> None:
    """Feed fair share with what a job that just ended used (once: only on the move to an end)."""
    job = change.after
    if change.before.status.is_terminal() or not job.status.is_terminal():
        return
    if job.started_at is not None and job.finished_at is not None and job.gpu_count:
        seconds = job.gpu_count * max(0.0, (job.finished_at - job.started_at).total_seconds())
        usage.add(job.user, job.account_group, seconds, job.finished_at)

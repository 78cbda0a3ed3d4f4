"""The one set of builders for the tests: nodes, inventories, job specs, stored jobs and the policy's
requests, each in one line with readable defaults.  Named for what they build."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from gpujobs.inventory import Device, Inventory, Node
from gpujobs.models import JobSpec, JobStatus
from gpujobs.scheduler.policy import Quota, Request
from gpujobs.store.records import JobRecord
from gpujobs.store.repository import new_job_values, record_of

GI = 2**30
NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def node(
    name: str,
    *types: str,
    cpu: float = 64,
    memory: float = 0,
    ready: bool = True,
    schedulable: bool = True,
) -> Node:
    """A node with one device per type given (``node("n1", "a100", "a100")``: two a100s)."""
    devices = tuple(Device(index=str(i), gpu_type=t, product=t.upper()) for i, t in enumerate(types))
    return Node(
        name=name,
        devices=devices,
        cpu_cores=cpu,
        memory_bytes=memory,
        ready=ready,
        schedulable=schedulable,
    )


def node_of(name: str, gpu_type: str = "a100-80gb", gpus: int = 4, **state: Any) -> Node:
    """A node with ``gpus`` devices of one type (``node_of("b", "t4-16gb", 2)``)."""
    return node(name, *[gpu_type] * gpus, **state)


def inventory(*nodes: Node, source: str = "simulated", at: datetime = NOW) -> Inventory:
    return Inventory(nodes=tuple(nodes), source=source, updated_at=at)


def spec(**fields: Any) -> JobSpec:
    """A valid job spec: an inline script unless the fields say otherwise."""
    if "script_path" not in fields:
        fields.setdefault("script", "print(1)")
    return JobSpec.model_validate(fields)


def stored_job(
    job_id: str = "j1",
    *,
    status: JobStatus = JobStatus.QUEUED,
    user: str = "alice",
    gpus: Sequence[str] = (),
    node: str | None = None,
    spec_fields: dict[str, Any] | None = None,
    **fields: Any,
) -> JobRecord:
    """A job as the store returns it: made from a spec (``spec_fields``) the way a submission is, then
    with any stored field overridden (``status``, ``launched_at``, ``holding``, ...)."""
    body = {"name": "train", "script": "print(1)", **(spec_fields or {})}
    count = body.get("gpu_count", len(gpus))
    values = new_job_values(
        job_id=job_id,
        user=user,
        groups=[],
        name=body["name"],
        priority="normal",
        gpu_required=bool(count),
        gpu_count=count,
        gpu_type=body.get("gpu_type", "any"),
        cpu_request=0.0,
        spec=body,
        created_at=NOW,
        timeout_seconds=body.get("timeout_seconds"),
    )
    values.update(status=status.value, node=node, gpus=list(gpus))
    return dataclasses.replace(record_of(1, values), **fields)


def request(
    job_id: str,
    gpus: int = 1,
    gpu_type: str = "any",
    cpu: float = 0,
    *,
    memory: float = 0,
    user: str = "u",
    group: str = "g",
    priority: int = 1,
    at: float = 0.0,
    limit: float | None = None,
    quota: Quota = Quota(),
    seq: int = 0,
) -> Request:
    """What the scheduling policy is asked to place for one queued job."""
    return Request(
        job_id=job_id,
        gpu_count=gpus,
        gpu_type=gpu_type,
        cpu=cpu,
        user=user,
        group=group,
        priority=priority,
        submitted_at=at,
        runtime_limit=limit,
        quota=quota,
        seq=seq,
        memory=memory,
    )

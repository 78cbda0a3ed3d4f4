"""Plain-text tables a person reads at a glance (no dependencies)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, with a rule under the headers."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def short_time(value: str | None) -> str:
    """``2026-11-28T23:31:02.123+00:00`` → ``23:31:02`` (UTC, as the service reports it)."""
    if not value:
        return ""
    return value[11:19]


def job_row(view: dict[str, Any]) -> tuple[str, ...]:
    """One line of a job listing (`gpujobs list`, `%gpujobs`): state, place in the queue and why."""
    position = f" #{view['queue_position']}" if view.get("queue_position") else ""
    gpus = f"{view['gpu_count']}x{view['gpu_type']}" if view["gpu_count"] else "-"
    why = view.get("reason") or view.get("message") or ""
    return (
        view["job_id"],
        view["name"][:24],
        view["user"],
        view["status"] + position,
        gpus,
        short_time(view.get("created_at")),
        why[:60],
    )


JOB_HEADERS = ("JOB", "NAME", "USER", "STATUS", "GPUS", "CREATED", "WHY")


def jobs_listing(views: Sequence[dict[str, Any]]) -> str:
    """A table of jobs, or a sentence when there are none."""
    return table(JOB_HEADERS, [job_row(view) for view in views]) if views else "no jobs"

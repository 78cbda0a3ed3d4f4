"""Plain-text tables a person reads at a glance (no dependencies)."""

from __future__ import annotations

from collections.abc import Sequence


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

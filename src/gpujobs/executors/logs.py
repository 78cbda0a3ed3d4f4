"""Reading job logs from files: the last lines, or a live follow that ends when the job does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

_BLOCK = 64 * 1024
MAX_LOG_BYTES = 16 * 2**20


def read_tail(path: Path, lines: int | None) -> str:
    """The last ``lines`` lines of the file (all of it, up to 16 MiB, when None)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if lines is None:
                start = max(0, size - MAX_LOG_BYTES)
                handle.seek(start)
                return handle.read().decode("utf-8", errors="replace")
            data = b""
            position = size
            while position > 0 and data.count(b"\n") <= lines:
                step = min(_BLOCK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
                if size - position > MAX_LOG_BYTES:
                    break
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    parts = text.splitlines(keepends=True)
    return "".join(parts[-lines:]) if lines else ""


async def follow(
    path: Path, job_ended: Callable[[], Awaitable[bool]], *, poll: float = 0.1, from_start: bool = True
) -> AsyncIterator[bytes]:
    """Yield the log as it grows, a line at a time where possible; stop once the job has ended."""
    position = 0 if from_start else (path.stat().st_size if path.exists() else 0)
    pending = b""
    while True:
        ended = await job_ended()
        chunk = b""
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read(_BLOCK * 16)
                position += len(chunk)
        if chunk:
            pending += chunk
            complete, newline, rest = pending.rpartition(b"\n")
            if newline:
                yield complete + newline
                pending = rest
            continue  # there may be more right away
        if ended:
            if pending:
                yield pending
            return
        await asyncio.sleep(poll)

"""Reading job logs from files: the last lines, or a live follow that ends when the job does."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_BLOCK = 64 * 1024
# 8 MiB rather than 16: still ~100,000 lines of ordinary output, more than anyone reads in a notebook,
# while an answer is held three or four times over (bytes, str, JSON, the response) and crosses the
# hub's proxy.  bench/log_tail.py measures ~10 ms for a capped tail at 8 MiB and ~60 ms at 16 MiB
# (the bigger buffers go back to the OS between calls and fault in again), so tails stay snappy and a
# burst of them does not swell the service.
MAX_LOG_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Tail:
    """The end of a log.  ``truncated``: the answer holds less than was asked for, because getting
    more would have meant reading past ``MAX_LOG_BYTES``."""

    text: str
    truncated: bool


def read_tail(path: Path, lines: int | None) -> str:
    """The last ``lines`` lines of the file (everything, up to ``MAX_LOG_BYTES``, when None)."""
    return read_tail_info(path, lines).text


def read_tail_info(path: Path, lines: int | None) -> Tail:
    """The last ``lines`` lines of the file, and whether the size cap cut them short.

    Reads backwards from the end in blocks and stops as soon as it has the lines, so its cost follows
    the answer, never the file.  A line is what ends in a line feed (the last may lack it).  When the cap
    stops it, the answer starts at a whole line.  A missing file reads as empty.  What the file gains
    while being read is left for the next call: the answer is the file as it was when the call began.

    Example: ``read_tail_info(Path("job.log"), 100)`` → ``Tail(text="...", truncated=False)``.
    """
    if lines is not None and lines <= 0:
        return Tail("", truncated=False)
    try:
        with open(path, "rb") as handle:
            window = _read_backwards(handle, lines)
    except FileNotFoundError:
        return Tail("", truncated=False)
    return _tail_of(window, lines)


async def read_tail_info_async(path: Path, lines: int | None) -> Tail:
    """``read_tail_info`` in a worker thread, so the event loop never waits on the disk."""
    return await asyncio.to_thread(read_tail_info, path, lines)


class _Stop(enum.Enum):
    """Why reading backwards stopped."""

    ENOUGH_LINES = "enough lines"  # the oldest block read holds the break before the first wanted line
    START_OF_FILE = "start of file"
    CAP = "cap"  # MAX_LOG_BYTES read, or the file shrank under us: what was read is all we have


@dataclass(frozen=True)
class _Window:
    """The end of a file as read backwards: ``blocks`` newest first; ``breaks`` counts their line feeds
    except the file's own final one, which ends the last line rather than starting another."""

    blocks: list[bytes]
    breaks: int
    stop: _Stop


def _read_backwards(handle: BinaryIO, lines: int | None) -> _Window:
    """Blocks from the end of the file towards its start until ``lines`` line breaks are in hand.

    ``lines`` breaks before the end mean the first wanted line has begun.  Each byte is read and
    counted once, so the cost is linear in what is read, and what is read is bounded by the answer and
    by ``MAX_LOG_BYTES``.
    """
    position = handle.seek(0, os.SEEK_END)
    blocks: list[bytes] = []
    breaks = 0
    read = 0
    while position > 0:
        if read >= MAX_LOG_BYTES:
            return _Window(blocks, breaks, _Stop.CAP)
        step = min(_BLOCK, position, MAX_LOG_BYTES - read)
        position -= step
        handle.seek(position)
        block = handle.read(step)
        if len(block) < step:
            # Truncated or rotated while we read: the newer blocks are a consistent tail of the old
            # file, and nothing before them can be trusted.
            return _Window(blocks, breaks, _Stop.CAP)
        breaks += block.count(b"\n") - (1 if not blocks and block.endswith(b"\n") else 0)
        blocks.append(block)
        read += step
        if lines is not None and breaks >= lines:
            return _Window(blocks, breaks, _Stop.ENOUGH_LINES)
    return _Window(blocks, breaks, _Stop.START_OF_FILE)


def _tail_of(window: _Window, lines: int | None) -> Tail:
    """The text of the wanted lines in what ``_read_backwards`` returned."""
    if not window.blocks:
        return Tail("", truncated=window.stop is _Stop.CAP)
    if window.stop is _Stop.ENOUGH_LINES:
        assert lines is not None
        # The window holds ``breaks + 1`` lines, the first perhaps partial; the unwanted ones all start
        # in the oldest block (the newer ones hold fewer than ``lines`` breaks), so only it is split.
        unwanted = window.breaks - lines + 1
        oldest, newer = window.blocks[-1], window.blocks[-2::-1]
        return Tail(_decode(b"".join([oldest.split(b"\n", unwanted)[-1], *newer])), truncated=False)
    data = b"".join(reversed(window.blocks))
    if window.stop is _Stop.START_OF_FILE:
        return Tail(_decode(data), truncated=False)
    return Tail(_decode(_from_first_whole_line(data)), truncated=True)


def _from_first_whole_line(data: bytes) -> bytes:
    """``data`` without its first, partial line.  A single line longer than the cap is all there is:
    its end is kept rather than answering nothing."""
    first_break = data.find(b"\n", 0, len(data) - 1)
    return data[first_break + 1 :] if first_break >= 0 else data


def _decode(data: bytes) -> str:
    # Job output is whatever a script printed: bad bytes become U+FFFD rather than an error.  Cuts fall
    # right after a line feed, never inside a UTF-8 character, so no character is split (save the start
    # of a single line longer than the cap).
    return data.decode("utf-8", errors="replace")


# --- following ---------------------------------------------------------------------------------------

CHUNK = 1024 * 1024
POLL_SECONDS = 0.1


def _read(path: Path, position: int, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            return handle.read(size)
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


async def follow_file(
    path: Path, ended: asyncio.Event, *, poll: float = POLL_SECONDS
) -> AsyncIterator[bytes]:
    """The file from its start, then what is appended, a line at a time where possible; stops once
    ``ended`` is set and everything written before has been sent."""
    position = 0
    pending = b""
    while True:
        finished = ended.is_set()  # before reading: what was written before the end is read below
        if _size(path) > position:
            chunk = await asyncio.to_thread(_read, path, position, CHUNK)
            position += len(chunk)
            pending += chunk
            complete, newline, rest = pending.rpartition(b"\n")
            if newline:
                yield complete + newline
                pending = rest
            elif len(pending) >= CHUNK:  # output without newlines (a progress bar): pass it on anyway
                yield pending
                pending = b""
            continue  # there may be more right away
        if finished:
            if pending:
                yield pending
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ended.wait(), timeout=poll)

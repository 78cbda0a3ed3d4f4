"""``read_tail``: the last lines of a job's log, read backwards in bounded blocks.

Costs are asserted as bytes read (``open`` is wrapped), never as time.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpujobs.executors import logs
from gpujobs.executors.logs import (
    MAX_LOG_BYTES,
    Tail,
    read_tail,
    read_tail_info,
    read_tail_info_async,
)

GIB = 2**30


class WatchedFile:
    """A binary file that counts the bytes read through it and can run something after each read."""

    def __init__(self, handle: Any, after_read: Callable[[], None]) -> None:
        self.handle = handle
        self.after_read = after_read
        self.bytes_read = 0

    def __enter__(self) -> WatchedFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.handle.close()

    def seek(self, *args: int) -> int:
        return int(self.handle.seek(*args))

    def read(self, size: int = -1) -> bytes:
        data = bytes(self.handle.read(size))
        self.bytes_read += len(data)
        self.after_read()
        return data


class OpenWatcher:
    """Stands in for ``open`` inside ``gpujobs.executors.logs``: records every file it opens."""

    def __init__(self, after_read: Callable[[], None] = lambda: None) -> None:
        self.files: list[WatchedFile] = []
        self.threads: list[int] = []
        self.after_read = after_read

    def __call__(self, path: Path, mode: str = "r") -> WatchedFile:
        self.threads.append(threading.get_ident())
        watched = WatchedFile(open(path, mode), self.after_read)  # noqa: SIM115 - closed by WatchedFile
        self.files.append(watched)
        return watched

    @property
    def bytes_read(self) -> int:
        return sum(watched.bytes_read for watched in self.files)


@pytest.fixture
def watch_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., OpenWatcher]]:
    def install(after_read: Callable[[], None] = lambda: None) -> OpenWatcher:
        watcher = OpenWatcher(after_read)
        monkeypatch.setattr(logs, "open", watcher, raising=False)
        return watcher

    yield install


def log_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "job.log"
    path.write_bytes(content)
    return path


def sparse_file(tmp_path: Path, hole: int, end: bytes) -> Path:
    """``hole`` zero bytes that take no disk, then ``end``."""
    path = tmp_path / "big.log"
    with open(path, "wb") as handle:
        handle.truncate(hole)
        handle.seek(hole)
        handle.write(end)
    return path


def numbered_lines(count: int, width: int = 100) -> bytes:
    """``count`` lines of exactly ``width`` bytes, each starting with its number."""
    return b"".join(b"%09d " % i + b"x" * (width - 11) + b"\n" for i in range(count))


# --- edge cases --------------------------------------------------------------------------------------


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "never-written.log", 10) == ""
    assert read_tail_info(tmp_path / "never-written.log", None) == Tail("", truncated=False)


@pytest.mark.parametrize("lines", [None, 0, 1, 100])
def test_an_empty_file_reads_as_empty(tmp_path: Path, lines: int | None) -> None:
    assert read_tail_info(log_file(tmp_path, b""), lines) == Tail("", truncated=False)


def test_zero_lines_is_nothing_and_reads_nothing(tmp_path: Path, watch_open: Any) -> None:
    watcher = watch_open()
    assert read_tail_info(log_file(tmp_path, b"a\nb\n"), 0) == Tail("", truncated=False)
    assert watcher.bytes_read == 0


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"a\nb\nc\n", 1, "c\n"),
        (b"a\nb\nc\n", 2, "b\nc\n"),
        (b"a\nb\nc\n", 3, "a\nb\nc\n"),
        (b"a\nb\nc\n", 50, "a\nb\nc\n"),
        (b"a\nb\nc", 1, "c"),
        (b"a\nb\nc", 2, "b\nc"),
        (b"a\nb\nc", 9, "a\nb\nc"),
        (b"only line", 1, "only line"),
        (b"\n", 1, "\n"),
        (b"\n\n\n", 2, "\n\n"),
        (b"a\n\nb\n", 2, "\nb\n"),
        (b"a\r\nb\r\n", 1, "b\r\n"),
    ],
)
def test_the_last_lines_keep_their_ends(tmp_path: Path, content: bytes, lines: int, expected: str) -> None:
    assert read_tail_info(log_file(tmp_path, content), lines) == Tail(expected, truncated=False)


def test_no_limit_gives_the_whole_small_file(tmp_path: Path) -> None:
    assert read_tail_info(log_file(tmp_path, b"a\nb\nc"), None) == Tail("a\nb\nc", truncated=False)


def test_invalid_utf8_becomes_replacement_characters(tmp_path: Path) -> None:
    path = log_file(tmp_path, b"fine\n\xff\xfebad\nhalf \xe2\x82\n\xf0\x9f\x98\x80 ok\n")
    assert read_tail(path, 3) == "\ufffd\ufffdbad\nhalf \ufffd\n\U0001f600 ok\n"


def test_a_character_split_across_blocks_survives(tmp_path: Path) -> None:
    # A four-byte character straddling the first block boundary from the end.
    head = b"start\n" + b"y" * 100
    tail = b"x" * (logs._BLOCK - 2) + b"\n"
    path = log_file(tmp_path, head + "\U0001f600".encode() + tail)
    assert read_tail(path, 1) == "y" * 100 + "\U0001f600" + tail.decode()


def test_what_is_written_during_the_read_waits_for_the_next_read(tmp_path: Path, watch_open: Any) -> None:
    path = log_file(tmp_path, numbered_lines(5_000))

    def append_a_line() -> None:
        with open(path, "ab") as handle:
            handle.write(b"written meanwhile\n")

    watch_open(after_read=append_a_line)
    before = read_tail_info(path, 2_000)
    expected = "".join(numbered_lines(5_000).decode().splitlines(keepends=True)[-2_000:])
    assert before == Tail(expected, truncated=False)
    assert read_tail(path, 1) == "written meanwhile\n"


def test_a_file_cut_short_during_the_read_answers_what_was_read(tmp_path: Path, watch_open: Any) -> None:
    content = numbered_lines(5_000)
    path = log_file(tmp_path, content)
    watch_open(after_read=lambda: path.write_bytes(b"rotated\n"))
    tail = read_tail_info(path, 4_000)
    assert tail.truncated
    assert content.decode().endswith(tail.text)
    assert all(line.endswith("x") for line in tail.text.splitlines())


# --- correctness on random content -------------------------------------------------------------------

# Pieces of text with no line boundary but "\n" (splitlines() also splits at \r, \v, \f, \x1c-\x1e,
# \x85, \u2028 and \u2029; a log's lines are what ends in "\n").
_PIECES = [
    b"a",
    b"Z",
    b" ",
    b"\t",
    b"0",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
]


def random_log(rng: random.Random, lines: int, trailing_newline: bool) -> bytes:
    """Lines of random length (some empty, a few longer than a block) with valid and broken UTF-8."""
    out = []
    for _ in range(lines):
        length = rng.choice([0, 1, 5, 40, 200, 2_000, rng.randrange(40_000)])
        out.append(b"".join(rng.choices(_PIECES, k=length)))
    return b"\n".join(out) + (b"\n" if trailing_newline else b"")


@pytest.mark.parametrize("seed", range(6))
def test_matches_splitlines_on_random_content(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    content = random_log(rng, rng.randrange(1, 400), trailing_newline=seed % 2 == 0)
    path = log_file(tmp_path, content)
    text = content.decode("utf-8", errors="replace")
    every_line = text.splitlines(keepends=True)
    counts = {1, 2, 3, 7, 50, 200, len(every_line) - 1, len(every_line), len(every_line) + 3}
    counts |= {rng.randrange(1, len(every_line) + 2) for _ in range(10)}
    for lines in sorted(count for count in counts if count > 0):
        tail = read_tail_info(path, lines)
        assert tail.text.splitlines() == text.splitlines()[-lines:], lines
        assert tail == Tail("".join(every_line[-lines:]), truncated=False), lines
    assert read_tail_info(path, None) == Tail(text, truncated=False)


# --- the cap -----------------------------------------------------------------------------------------


def test_past_the_cap_it_answers_whole_lines_and_says_it_cut(tmp_path: Path, watch_open: Any) -> None:
    count = 2 * MAX_LOG_BYTES // 100 + 7
    path = log_file(tmp_path, numbered_lines(count))
    watcher = watch_open()
    for lines in (1_000_000, None):
        tail = read_tail_info(path, lines)
        assert tail.truncated
        kept = tail.text.splitlines(keepends=True)
        # The cap falls inside a line (lines are 100 bytes, the cap is not a multiple of 100): that
        # partial line is dropped and every line kept is whole, ending with the file's last.
        assert len(kept) == MAX_LOG_BYTES // 100
        assert all(len(line) == 100 for line in kept)
        assert kept[-1].startswith(f"{count - 1:09d} ")
        assert [int(line[:9]) for line in kept] == list(range(count - len(kept), count))
    assert watcher.bytes_read <= 2 * MAX_LOG_BYTES


def test_lines_within_the_cap_are_not_truncated(tmp_path: Path) -> None:
    count = 2 * MAX_LOG_BYTES // 100
    path = log_file(tmp_path, numbered_lines(count))
    lines = MAX_LOG_BYTES // 100 - 1
    tail = read_tail_info(path, lines)
    assert not tail.truncated
    assert len(tail.text.splitlines()) == lines


def test_one_line_longer_than_the_cap_keeps_its_end(tmp_path: Path) -> None:
    path = sparse_file(tmp_path, MAX_LOG_BYTES + 123, b"the end of a long line\n")
    tail = read_tail_info(path, 3)
    assert tail.truncated
    assert tail.text.endswith("\x00the end of a long line\n")
    assert len(tail.text) == MAX_LOG_BYTES


# --- a 1 GiB log -------------------------------------------------------------------------------------


@pytest.fixture
def gigabyte_log(tmp_path: Path) -> tuple[Path, bytes]:
    """A 1 GiB sparse log whose last 1,000 lines are real."""
    real = numbered_lines(1_000)
    return sparse_file(tmp_path, GIB, b"\n" + real), real


def test_a_short_tail_of_a_huge_log_reads_one_block(gigabyte_log: Any, watch_open: Any) -> None:
    path, real = gigabyte_log
    watcher = watch_open()
    assert read_tail_info(path, 100) == Tail(
        "".join(real.decode().splitlines(keepends=True)[-100:]), truncated=False
    )
    assert watcher.bytes_read <= logs._BLOCK


@pytest.mark.parametrize("lines", [1_000, 1_001, 1_000_000, None])
def test_a_long_tail_of_a_huge_log_reads_at_most_the_cap(
    gigabyte_log: Any, watch_open: Any, lines: int | None
) -> None:
    path, real = gigabyte_log
    watcher = watch_open()
    tail = read_tail_info(path, lines)
    if lines == 1_000:
        # All the real lines, found once the line feed before them is read: no need to go further.
        assert tail == Tail(real.decode(), truncated=False)
        assert watcher.bytes_read <= len(real) + logs._BLOCK
    else:
        # The zeros before them make one line far longer than the cap: it is dropped, partial.
        assert tail == Tail(real.decode(), truncated=True)
        assert watcher.bytes_read <= MAX_LOG_BYTES


# --- async --------------------------------------------------------------------------------------------


async def test_async_reads_happen_off_the_event_loop(tmp_path: Path, watch_open: Any) -> None:
    path = log_file(tmp_path, b"one\ntwo\nthree\n")
    watcher = watch_open()
    assert await read_tail_info_async(path, 5) == Tail("one\ntwo\nthree\n", truncated=False)
    assert watcher.threads
    assert threading.get_ident() not in watcher.threads

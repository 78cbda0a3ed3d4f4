"""``GET .../logs?tail=N`` on big logs: milliseconds to read the last 100 and the last 1,000,000 lines of
a 200 MB and a 1 GB log.

The logs are sparse files (a hole, which costs no disk, then 32 MiB of real ~80-byte lines), so the
tail is read from real lines and the cap on what a tail may read is reached inside them.  The page
cache is warm after the first read, as it is for a log a job is still writing.
Baseline, in the same run: the previous ``read_tail``, which prepended each 64 KiB block to one growing
bytes object and counted line feeds over all of it at every step (quadratic), with a 16 MiB cap.
Target: well under a second for any tail of any log; the cost follows the answer, never the file.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import timed_ms

from gpujobs.executors import logs
from gpujobs.executors.logs import read_tail_info

MB = 10**6
REAL_TAIL = 32 * 2**20


def previous_read_tail(path: Path, lines: int) -> str:
    """The ``read_tail`` this module replaced, kept verbatim as the baseline."""
    block, cap = 64 * 1024, 16 * 2**20
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            data = b""
            position = size
            while position > 0 and data.count(b"\n") <= lines:
                step = min(block, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
                if size - position > cap:
                    break
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    parts = text.splitlines(keepends=True)
    return "".join(parts[-lines:]) if lines else ""


def make_log(folder: Path, size: int) -> Path:
    """A sparse log of ``size`` bytes whose last ``REAL_TAIL`` bytes are numbered lines."""
    line_count = REAL_TAIL // 80
    real = b"".join(
        b"%09d step loss=0.%06d lr=3e-4 %s\n" % (i, i % 999_983, b"." * 37) for i in range(line_count)
    )
    path = folder / f"job-{size // MB}MB.log"
    with open(path, "wb") as handle:
        handle.truncate(size - len(real))
        handle.seek(size - len(real))
        handle.write(real)
    return path


def warm_page_cache(path: Path) -> None:
    """Read the real lines once, as a log a job is still writing sits in the page cache."""
    with open(path, "rb") as handle:
        handle.seek(-REAL_TAIL, os.SEEK_END)
        handle.read()


def with_cap(cap: int, function: Callable[[], object]) -> Callable[[], object]:
    """``function`` run under another ``MAX_LOG_BYTES``, to show what the cap costs."""

    def run() -> object:
        saved, logs.MAX_LOG_BYTES = logs.MAX_LOG_BYTES, cap
        try:
            return function()
        finally:
            logs.MAX_LOG_BYTES = saved

    return run


def measure(path: Path, lines: int, repeats: int) -> dict[str, object]:
    new = timed_ms(lambda: read_tail_info(path, lines), repeats)
    at_16_mib = timed_ms(with_cap(16 * 2**20, lambda: read_tail_info(path, lines)), repeats)
    previous = timed_ms(lambda: previous_read_tail(path, lines), max(1, repeats // 5))
    answer = read_tail_info(path, lines)
    assert previous_read_tail(path, lines).endswith(answer.text)
    new_p50, previous_p50 = statistics.median(new), statistics.median(previous)
    return {
        "file_mb": path.stat().st_size // MB,
        "tail": lines,
        "new_p50_ms": round(new_p50, 2),
        "new_max_ms": round(max(new), 2),
        "new_cap_16mib_p50_ms": round(statistics.median(at_16_mib), 2),
        "baseline_previous_ms": round(previous_p50, 1),
        "speedup": round(previous_p50 / max(new_p50, 1e-3), 1),
        "answer_lines": answer.text.count("\n"),
        "answer_mb": round(len(answer.text) / MB, 2),
        "truncated": answer.truncated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    options = parser.parse_args()
    repeats = 5 if options.quick else 15
    results = []
    with tempfile.TemporaryDirectory(prefix="gpujobs-bench-logs-") as folder:
        for size in (200 * MB, 1000 * MB):
            path = make_log(Path(folder), size)
            warm_page_cache(path)
            for lines in (100, 1_000_000):
                row = measure(path, lines, repeats)
                results.append(row)
                print(
                    f"  {row['file_mb']:>5} MB, tail={lines:>9}: {row['new_p50_ms']} ms "
                    f"(max {row['new_max_ms']}, at a 16 MiB cap {row['new_cap_16mib_p50_ms']}; "
                    f"previous: {row['baseline_previous_ms']} ms) -> {row['answer_lines']} lines, "
                    f"{row['answer_mb']} MB{', truncated' if row['truncated'] else ''}"
                )
    print(json.dumps({"max_log_bytes": logs.MAX_LOG_BYTES, "tails": results}))


if __name__ == "__main__":
    main()

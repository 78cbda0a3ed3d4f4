"""The audit log's file: one JSON line per event, rotated by size, numbered across rotations and
restarts, read back newest first with filters and pages."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpujobs.service.audit import AuditLog, AuditQuery


def test_events_are_numbered_rotated_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=600, keep=2)
    for n in range(30):
        log.record("submit", user=f"u{n % 3}", outcome="created", job_id=f"j{n}", client="10.0.0.1")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]  # keep=2: older ones are gone
    assert all(p.stat().st_size <= 600 for p in tmp_path.iterdir())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    seqs = [json.loads(line)["seq"] for p in ("audit.log.2", "audit.log.1", "audit.log") for line in
            (tmp_path / p).read_text().splitlines()]  # fmt: skip
    assert seqs == list(range(seqs[0], 31))  # consecutive, the newest last

    reopened = AuditLog(path, max_bytes=600, keep=2)  # a restart continues the numbering
    reopened.record("start", user=None, outcome="ok")
    newest, _ = reopened.read(AuditQuery(limit=1))
    assert newest[0]["seq"] == 31 and newest[0]["action"] == "start"


def test_reading_filters_and_pages_newest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=10_000, keep=3)
    for n in range(12):
        log.record(
            "submit" if n % 2 else "cancel", user="alice" if n < 6 else "bob", outcome="ok", job_id=str(n)
        )
    first, cursor = log.read(AuditQuery(user="bob", action="submit", limit=2))
    assert [e["job_id"] for e in first] == ["11", "9"] and cursor is not None
    second, cursor = log.read(AuditQuery(user="bob", action="submit", limit=2, before_seq=cursor))
    assert [e["job_id"] for e in second] == ["7"] and cursor is None
    future = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert log.read(AuditQuery(since=future)) == ([], None)


def test_a_line_cut_short_by_a_crash_does_not_break_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=10_000, keep=1)
    log.record("submit", user="alice", outcome="created", job_id="a")
    log.close()
    with path.open("a") as handle:
        handle.write('{"seq": 2, "time": "20')  # the service died mid-write
    again = AuditLog(path, max_bytes=10_000, keep=1)
    again.record("cancel", user="alice", outcome="cancelled", job_id="a")
    entries, _ = again.read(AuditQuery())
    assert [(e["seq"], e["action"]) for e in entries] == [(2, "cancel"), (1, "submit")]

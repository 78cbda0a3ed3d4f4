"""The audit log: who did what, when, from where, and how it ended, one JSON line per event.

Append-only ``<data_dir>/audit.log`` (mode 0600), rotated by size to ``audit.log.1`` … ``.N``.  Each line:
``{"seq", "time", "user", "action", "job_id", "outcome", "client", "detail"}``; ``seq`` grows by one per
event across rotations and restarts, and is the cursor of ``GET api/k8s/audit``.

Recorded: every submission and cancel (done or refused), an admin's listing of other users' jobs, every
refused request (401, 403), and each start of the service with its configuration's origin.  Writes are
a line to an open file (microseconds), under a lock: the event loop and worker threads both record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from starlette.requests import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    before_seq: int | None = None
    limit: int = 100


def matches(entry: dict[str, Any], query: AuditQuery) -> bool:
    if query.user is not None and entry.get("user") != query.user:
        return False
    if query.action is not None and entry.get("action") != query.action:
        return False
    if query.before_seq is not None and not entry.get("seq", 0) < query.before_seq:
        return False
    if query.since is not None:
        try:
            if datetime.fromisoformat(entry["time"]) < query.since:
                return False
        except (KeyError, TypeError, ValueError):
            return False
    return True


def _lines_newest_first(path: Path) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    yield from reversed(text.splitlines())


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._handle: TextIO | None = None
        self._seq = self._last_seq()

    def _files_newest_first(self) -> list[Path]:
        return [self.path, *(self.path.with_name(f"{self.path.name}.{n}") for n in range(1, self.keep + 1))]

    def _last_seq(self) -> int:
        for path in self._files_newest_first():
            for line in _lines_newest_first(path):
                try:
                    return int(json.loads(line)["seq"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash: look further back
        return 0

    def _open(self) -> TextIO:
        if self._handle is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                os.write(descriptor, b"\n")  # a line cut short by a crash ends here, not in the next one
            self._handle = os.fdopen(descriptor, "a", encoding="utf-8", buffering=1)
        return self._handle

    def _rotate(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        files = self._files_newest_first()
        for older, newer in zip(reversed(files[1:]), reversed(files[:-1]), strict=True):
            if newer.exists():
                newer.replace(older)

    def record(
        self,
        action: str,
        *,
        user: str | None,
        outcome: str,
        job_id: str | None = None,
        client: str | None = None,
        **detail: Any,
    ) -> None:
        """One event.  Never raises: an audit write that fails is logged by the caller's logger, and the
        request it describes is not refused for it."""
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "time": datetime.now(timezone.utc).isoformat(),
                "user": user,
                "action": action,
                "job_id": job_id,
                "outcome": outcome,
                "client": client,
            }
            if detail:
                entry["detail"] = detail
            line = json.dumps(entry, default=str) + "\n"
            try:
                handle = self._open()
                if handle.tell() + len(line) > self.max_bytes and handle.tell() > 0:
                    self._rotate()
                    handle = self._open()
                handle.write(line)
            except OSError:
                self._handle = None
                raise

    def read(self, query: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
        """Matching entries, newest first, at most ``query.limit``; and the cursor of the next page.
        Reads files (call it from a worker thread)."""
        found: list[dict[str, Any]] = []
        for path in self._files_newest_first():
            for line in _lines_newest_first(path):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if matches(entry, query):
                    found.append(entry)
                    if len(found) > query.limit:
                        return found[: query.limit], found[query.limit - 1]["seq"]
        return found, None

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def client_of(request: Request) -> str | None:
    """Who sent the request.  uvicorn already puts here the address that a proxy on this machine (the
    hub's) says it forwarded for — the rightmost entry of ``X-Forwarded-For``, which that proxy added;
    the entries before it are whatever the caller claimed, and are ignored."""
    return request.client.host if request.client else None


def audit(request: Request, action: str, *, user: str | None, outcome: str, **fields: Any) -> None:
    """Record one event of this request (once: the error handler then leaves it alone)."""
    log_ = getattr(getattr(request.app.state, "runtime", None), "audit", None)
    if log_ is None:
        return  # the service is not (yet) running: nothing to record into
    request.state.audited = True
    try:
        log_.record(action, user=user, outcome=outcome, client=client_of(request), **fields)
    except OSError:
        log.exception("could not write the audit log (%s %s by %s)", action, outcome, user)


def audit_refusal(request: Request, status: int, message: str) -> None:
    """A 401 or 403 that no route recorded itself."""
    if getattr(request.state, "audited", False):
        return
    user = getattr(request.state, "user", None)  # known when the token was good but the right lacking
    audit(request, "refused", user=user, outcome=f"{status}: {message}", path=request.url.path[:300])

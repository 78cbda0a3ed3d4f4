"""How the service is doing: the event loop's lag, whether the store takes writes, whether the executor
reaches its jobs.  ``healthz`` reports it; the maintenance task keeps the answers fresh."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session

from ..executors.base import Executor
from ..store import Store
from ..store import repository as repo

log = logging.getLogger(__name__)
LAG_PERIOD = 0.1
HEARTBEAT_SECONDS = 1.0
KEY_RETENTION = timedelta(hours=48)  # Idempotency-Keys are honoured at least this long (a day promised)
PURGE_KEYS_SECONDS = 3600.0
LAG_DEGRADED_SECONDS = 1.0
WRITE_STALLED_SECONDS = 1.0


class DataDirInUse(RuntimeError):
    pass


class DataDirLock:
    """One service per data dir: two would both schedule onto the same GPUs.  An exclusive ``flock``
    on ``<data_dir>/service.lock``, which the kernel releases when the process dies (kill -9 included),
    so a restart never finds a stale lock."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "service.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the service's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirInUse(
                f"another gpujobs service (pid {holder}) is using {self.path.parent}; stop it first, or "
                "give this one its own --data-dir"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class LoopLag:
    """How late the event loop runs a callback that asked to run ``LAG_PERIOD`` from now: the time any
    request waits before it is even looked at."""

    def __init__(self) -> None:
        self.last = 0.0
        self.worst_recent = 0.0
        self._window: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._measure(), name="gpujobs-loop-lag")

    async def _measure(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_PERIOD)
            self.last = max(0.0, time.perf_counter() - asked - LAG_PERIOD)
            self._window = [*self._window[-49:], self.last]  # the last ~5 seconds
            self.worst_recent = max(self._window)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True)
class Health:
    status: str  # "ok" or "degraded"
    problems: tuple[str, ...]


def assess(store: Store, executor: Executor, lag: LoopLag, observe_problem: str | None) -> Health:
    problems = []
    if store.write_failure:
        problems.append(f"the job database refuses writes ({store.write_failure})")
    stalled = store.write_stalled()
    if stalled > WRITE_STALLED_SECONDS:
        problems.append(
            f"the job database has not finished a write for {stalled:.0f} s (locked, or a slow disk)"
        )
    executor_problem = executor.problem() or observe_problem or executor.view_state().reason
    if executor_problem:
        problems.append(f"the {executor.name} executor cannot reach its jobs ({executor_problem})")
    if lag.worst_recent > LAG_DEGRADED_SECONDS:
        problems.append(f"the service is overloaded: requests waited up to {lag.worst_recent:.1f} s")
    return Health("degraded" if problems else "ok", tuple(problems))


def _forget_old_keys(session: Session) -> int:
    return repo.forget_idempotency_keys(session, datetime.now(timezone.utc) - KEY_RETENTION)


class Maintenance:
    """While the store refuses writes, try a small one every second, so health turns ``ok`` as soon as
    it takes them again; drop expired Idempotency-Keys now and then."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpujobs-maintenance")

    async def _run(self) -> None:
        next_purge = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                if self.store.write_failure:
                    await self.store.write(repo.heartbeat)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_KEYS_SECONDS
                    await self.store.write(_forget_old_keys)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("maintenance write failed: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

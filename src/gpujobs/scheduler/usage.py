"""Recent GPU usage per user and per group, decayed with a half-life (Slurm's fair-share idea).

Fed when jobs end (and from the store at start-up); the scheduling loop adds what running jobs have
used so far.  Pure bookkeeping: the time is always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime


class UsageTracker:
    def __init__(self, half_life_seconds: float) -> None:
        self.half_life = half_life_seconds
        self._users: dict[str, tuple[float, float]] = {}  # name → (value, as of epoch seconds)
        self._groups: dict[str, tuple[float, float]] = {}

    def _decay(self, value: float, since: float, now: float) -> float:
        return value * math.pow(0.5, max(0.0, now - since) / self.half_life)

    def _add(self, table: dict[str, tuple[float, float]], key: str, amount: float, at: float) -> None:
        value, since = table.get(key, (0.0, at))
        if at >= since:
            table[key] = (self._decay(value, since, at) + amount, at)
        else:  # an older record (at start-up): decay it to the table's time instead
            table[key] = (value + self._decay(amount, at, since), since)

    def add(self, user: str, group: str, gpu_seconds: float, at: datetime) -> None:
        when = at.timestamp()
        self._add(self._users, user, gpu_seconds, when)
        self._add(self._groups, group, gpu_seconds, when)

    def load(self, records: Iterable[tuple[str, str, float, datetime]]) -> None:
        for user, group, gpu_seconds, finished_at in records:
            self.add(user, group, gpu_seconds, finished_at)

    def snapshot(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        users = {key: self._decay(value, since, now) for key, (value, since) in self._users.items()}
        groups = {key: self._decay(value, since, now) for key, (value, since) in self._groups.items()}
        return users, groups

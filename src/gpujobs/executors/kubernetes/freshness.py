"""How current the watched cache is: per watched kind, when the API server was last heard from and
whether the watch is in sync.  No I/O; the clock is passed in.

A watch is *in sync* from a successful list until its first error.  The server is *heard from* on
every list, event and bookmark.  The cache is **stale** when a watch has been out of sync for longer
than a short grace (a dropped connection that relists at once is normal), or when a watch that
believes itself in sync has heard nothing for longer than the silence window — a half-open
connection, or an API server that came back without the history the watch asked for.  A stale cache
is re-listed by its watch; meanwhile nobody should act on it as if it were the truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# A watch out of sync for less than this is reconnecting, not stale.
OUT_OF_SYNC_GRACE_SECONDS = 1.0


@dataclass
class _Watch:
    heard_at: float | None = None  # monotonic time of the last list, event or bookmark
    synced_wall: float | None = None  # wall-clock time of the same (what people are shown)
    in_sync: bool = False
    trouble: str | None = None  # why it is out of sync
    trouble_since: float | None = None


@dataclass(frozen=True)
class Staleness:
    reason: str  # for people: what is out of date and why
    synced_at: float | None  # wall-clock time the whole cache was last known to match the cluster


@dataclass
class Freshness:
    silence_seconds: float
    kinds: Iterable[str]
    _watches: dict[str, _Watch] = field(init=False)

    def __post_init__(self) -> None:
        self._watches = {kind: _Watch() for kind in self.kinds}

    def heard(self, kind: str, now: float, wall: float, *, synced: bool = False) -> None:
        """The server spoke for ``kind`` (``synced``: a complete list, so the watch is in sync again)."""
        watch = self._watches[kind]
        if synced:
            watch.in_sync, watch.trouble, watch.trouble_since = True, None, None
        if watch.in_sync:
            watch.heard_at, watch.synced_wall = now, wall

    def lost(self, kind: str, now: float, why: str) -> None:
        """The watch of ``kind`` broke: what it knows may already be out of date."""
        watch = self._watches[kind]
        if watch.in_sync or watch.trouble_since is None:
            watch.trouble_since = now
        watch.in_sync, watch.trouble = False, why

    def listed(self, kind: str) -> bool:
        """Whether ``kind`` has been listed at least once (the cache knows something of it)."""
        return self._watches[kind].heard_at is not None

    def deadline(self, kind: str) -> float | None:
        """When the watch of ``kind`` must have heard something to stay fresh (monotonic)."""
        watch = self._watches[kind]
        return watch.heard_at + self.silence_seconds if watch.heard_at is not None else None

    def staleness(self, now: float) -> Staleness | None:
        """Why the cache is stale, or None when every watch is in sync and has heard recently."""
        reasons = []
        for kind, watch in sorted(self._watches.items()):
            if watch.heard_at is None:  # never listed: nothing is known, grace or not
                reasons.append(
                    f"{kind}s could not be listed yet" + (f" ({watch.trouble})" if watch.trouble else "")
                )
            elif not watch.in_sync and watch.trouble_since is not None:
                if now - watch.trouble_since >= OUT_OF_SYNC_GRACE_SECONDS:
                    reasons.append(f"the watch of {kind}s is down ({watch.trouble})")
            elif now - watch.heard_at > self.silence_seconds:
                reasons.append(f"nothing heard about {kind}s for {now - watch.heard_at:.0f} s")
        return Staleness("; ".join(reasons), self.synced_at()) if reasons else None

    def synced_at(self) -> float | None:
        """Wall-clock time up to which every watch is known to have been current."""
        walls = [w.synced_wall for w in self._watches.values()]
        return None if any(w is None for w in walls) else min(w for w in walls if w is not None)

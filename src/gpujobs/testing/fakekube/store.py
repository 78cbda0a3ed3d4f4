"""Objects, resourceVersions and the event log behind list and watch.

Indexed like the API server's watch cache, so a simulated cluster of 5,000 nodes and 100,000 pods
answers in the time a real one would: objects by kind, pods by the node they are bound to (the
``spec.nodeName`` field selector), events by resourceVersion.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Key = tuple[str, str]  # namespace ("" for cluster-scoped), name


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Conflict(Exception):
    """AlreadyExists."""


class Gone(Exception):
    """The asked-for history was compacted (HTTP 410)."""


@dataclass
class Event:
    rv: int
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]


def _node_of(obj: dict[str, Any]) -> str:
    return str(obj.get("spec", {}).get("nodeName") or "")


@dataclass
class Store:
    objects: dict[str, dict[Key, dict[str, Any]]] = field(default_factory=dict)  # kind → key → object
    events: list[Event] = field(default_factory=list)
    rv: int = 0
    compacted_before: int = 0  # watches from before this resourceVersion get 410
    max_events: int = 100_000

    def __post_init__(self) -> None:
        # One Event per change, swapped when it fires: a waiter holds no lock, so one cancelled mid-wait
        # (a watch whose client went away) cannot leave others stuck.  An asyncio.Condition waited on
        # with wait_for could: its lock was left held or released twice, and every write then hung.
        self._changed = asyncio.Event()
        self._pods_by_node: dict[str, set[Key]] = {}
        self._sorted: dict[str, tuple[int, Sequence[Key]]] = {}  # kind → (rv, its keys sorted)

    # --- reading -----------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get(kind, {}).get((namespace, name))
        return copy.deepcopy(found) if found else None

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
        *,
        node: str | None = None,
        after: Key | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind in key order.  ``node``: only pods bound to it (indexed); ``after`` and
        ``limit``: one page of a paginated list."""
        of_kind = self.objects.get(kind, {})
        if node is not None:
            keys: Sequence[Key] = sorted(self._pods_by_node.get(node, ()))
        else:
            keys = self._sorted_keys(kind)
            if after is not None:
                keys = keys[bisect.bisect_right(keys, after) :]
        found = []
        for key in keys:
            obj = of_kind[key]
            if (namespace is None or key[0] == namespace) and (match is None or match(obj)):
                found.append(copy.deepcopy(obj))
                if limit is not None and len(found) >= limit:
                    break
        return found

    def scan(self, kind: str) -> Iterable[dict[str, Any]]:
        """Every object of a kind, uncopied (for the simulator's own bookkeeping: do not change them)."""
        return self.objects.get(kind, {}).values()

    def _sorted_keys(self, kind: str) -> Sequence[Key]:
        cached = self._sorted.get(kind)
        if cached is None or cached[0] != self.rv:
            cached = (self.rv, sorted(self.objects.get(kind, {})))
            self._sorted[kind] = cached
        return cached[1]

    def events_since(self, rv: int) -> Iterable[Event]:
        if rv < self.compacted_before:
            raise Gone(rv)
        return self.events[bisect.bisect_right(self.events, rv, key=lambda e: e.rv) :]

    # --- writing -----------------------------------------------------------------------------------

    async def _record(self, kind: str, kind_event: str, obj: dict[str, Any]) -> None:
        self.events.append(Event(self.rv, kind, kind_event, copy.deepcopy(obj)))
        if len(self.events) > self.max_events:
            dropped = self.events[: len(self.events) - self.max_events]
            self.events = self.events[len(dropped) :]
            self.compacted_before = dropped[-1].rv + 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, after: int, timeout: float) -> None:
        """Return once the store is past resourceVersion ``after``, or when ``timeout`` passes."""
        if self.rv > after:
            return
        with contextlib.suppress(asyncio.TimeoutError):  # not the builtin TimeoutError before 3.11
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    def _put(self, kind: str, key: Key, obj: dict[str, Any] | None) -> None:
        of_kind = self.objects.setdefault(kind, {})
        if kind == "Pod":
            old = of_kind.get(key)
            if old is not None and _node_of(old):
                self._pods_by_node.get(_node_of(old), set()).discard(key)
            if obj is not None and _node_of(obj):
                self._pods_by_node.setdefault(_node_of(obj), set()).add(key)
        if obj is None:
            of_kind.pop(key, None)
        else:
            of_kind[key] = obj

    def _stamp(self, namespace: str, obj: dict[str, Any]) -> Key:
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        if namespace:
            metadata["namespace"] = namespace
        metadata.update(uid=str(uuid.uuid4()), resourceVersion=str(self.rv), creationTimestamp=now_iso())
        return (namespace, metadata["name"])

    async def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj.get("metadata", {}).get("name")
        if name and (namespace, name) in self.objects.get(kind, {}):
            raise Conflict(name)
        self.rv += 1
        key = self._stamp(namespace, obj)
        self._put(kind, key, copy.deepcopy(obj))
        await self._record(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    def load(self, kind: str, namespace: str, objects: Iterable[dict[str, Any]]) -> int:
        """Add many objects at once, as if they had been there before anyone watched (no events)."""
        self.rv += 1
        count = 0
        for obj in objects:
            self._put(kind, self._stamp(namespace, obj), obj)
            count += 1
        self.compacted_before = self.rv  # a watch from before the load must list again
        return count

    async def update(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, obj["metadata"]["name"])
        if key not in self.objects.get(kind, {}):
            raise KeyError(key)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._put(kind, key, copy.deepcopy(obj))
        await self._record(kind, "MODIFIED", obj)
        return copy.deepcopy(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get(kind, {}).get((namespace, name))
        if obj is None:
            return None
        self._put(kind, (namespace, name), None)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        await self._record(kind, "DELETED", obj)
        return obj

    def compact(self) -> None:
        """Forget the event history: a watch from before now gets 410 (one from now misses nothing)."""
        self.events = []
        self.compacted_before = self.rv

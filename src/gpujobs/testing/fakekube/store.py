"""Objects, resourceVersions and the event log behind list and watch."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Key = tuple[str, str, str]  # kind, namespace ("" for cluster-scoped), name


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


@dataclass
class Store:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    rv: int = 0
    compacted_before: int = 0  # watches from before this resourceVersion get 410
    max_events: int = 100_000

    def __post_init__(self) -> None:
        self.changed = asyncio.Condition()

    # --- reading -----------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def list(
        self, kind: str, namespace: str | None = None, match: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and (namespace is None or ns == namespace) and (match is None or match(obj))
        ]

    def events_since(self, rv: int) -> Iterable[Event]:
        if rv < self.compacted_before:
            raise Gone(rv)
        return [event for event in self.events if event.rv > rv]

    # --- writing -----------------------------------------------------------------------------------

    async def _record(self, kind: str, kind_event: str, obj: dict[str, Any]) -> None:
        self.events.append(Event(self.rv, kind, kind_event, copy.deepcopy(obj)))
        if len(self.events) > self.max_events:
            dropped = self.events[: len(self.events) - self.max_events]
            self.events = self.events[len(dropped) :]
            self.compacted_before = dropped[-1].rv + 1
        async with self.changed:
            self.changed.notify_all()

    async def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        key = (kind, namespace, metadata["name"])
        if key in self.objects:
            raise Conflict(metadata["name"])
        self.rv += 1
        if namespace:
            metadata["namespace"] = namespace
        metadata.update(uid=str(uuid.uuid4()), resourceVersion=str(self.rv), creationTimestamp=now_iso())
        self.objects[key] = copy.deepcopy(obj)
        await self._record(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    async def update(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = (kind, namespace, obj["metadata"]["name"])
        if key not in self.objects:
            raise KeyError(key)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = copy.deepcopy(obj)
        await self._record(kind, "MODIFIED", obj)
        return copy.deepcopy(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((kind, namespace, name), None)
        if obj is None:
            return None
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        await self._record(kind, "DELETED", obj)
        return obj

    def compact(self) -> None:
        """Forget the event history (the next watch from an old resourceVersion gets 410)."""
        self.events = []
        self.compacted_before = self.rv + 1

"""The ``gpu-status`` answer, built from an inventory and what jobs hold.  No I/O.

``build_gpu_status`` is the definition.  ``GpuStatusCache`` gives the same JSON fast enough for a
5,000-node cluster (DESIGN §6): the whole answer is kept until the inventory, the jobs holding GPUs
or the queued demand change, and each node's part of it until that node or its holders change.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from .gputypes import satisfies
from .inventory import Inventory, Node, slots_held_by_others
from .models import GpuDevice, GpuNodeView, GpuStatus, GpuTypeSummary
from .store.records import JobRecord

OTHER_WORKLOADS = "other-workloads"  # the holder shown for GPUs that pods outside gpujobs hold
OTHER_USERS = "other-users"  # the holder a user sees for GPUs that other users' jobs hold
_TYPES_JSON = TypeAdapter(list[GpuTypeSummary])
_DATETIME_JSON = TypeAdapter(datetime)
_OPTIONAL_DATETIME_JSON = TypeAdapter(datetime | None)
_STR_JSON = TypeAdapter(str)
_OPTIONAL_STR_JSON = TypeAdapter(str | None)


def holders(active_jobs: Sequence[JobRecord], viewer: str | None = None) -> dict[tuple[str, str], str]:
    """(node, device index) → the job holding it, as ``viewer`` may see it: their own jobs by id,
    other users' as ``OTHER_USERS``.  ``viewer`` None (an admin) sees every id."""
    return {
        (job.node, index): job.job_id if viewer is None or job.user == viewer else OTHER_USERS
        for job in active_jobs
        if job.node
        for index in job.gpus
    }


def _held(
    active_jobs: Sequence[JobRecord], external: Mapping[str, Sequence[str]] | None, viewer: str | None
) -> dict[tuple[str, str], str]:
    held = holders(active_jobs, viewer)
    for node_name, indices in (external or {}).items():
        for index in indices:
            held[(node_name, index)] = OTHER_WORKLOADS
    return held


@dataclass(frozen=True)
class _NodePart:
    """One node's share of the answer: its counts per type and its entry in ``gpu_nodes``."""

    per_type: tuple[tuple[str, int, int, int], ...]  # (type, total, available, used)
    view: GpuNodeView


def _node_part(node: Node, held: Mapping[str, str]) -> _NodePart:
    """``held``: device index → holder, for this node."""
    per_type: dict[str, list[int]] = {}
    devices = []
    for device in node.devices:
        holder = held.get(device.index)
        free = holder is None and node.offers
        counts = per_type.setdefault(device.gpu_type, [0, 0, 0])
        counts[0] += 1
        counts[1] += free
        counts[2] += holder is not None
        devices.append(
            GpuDevice(
                index=device.index,
                uuid=device.uuid,
                gpu_type=device.gpu_type,
                product=device.product,
                memory_mib=device.memory_mib,
                utilization_percent=device.utilization_percent,
                simulated=device.simulated,
                job_id=holder,
            )
        )
    types = list(per_type)
    view = GpuNodeView(
        name=node.name,
        gpu_type=types[0] if len(types) == 1 else (None if not types else "mixed"),
        total=len(node.devices),
        available=sum(c[1] for c in per_type.values()),
        used=sum(c[2] for c in per_type.values()),
        ready=node.ready,
        schedulable=node.schedulable,
        taints=list(node.taints),
        devices=devices,
    )
    return _NodePart(tuple((t, c[0], c[1], c[2]) for t, c in per_type.items()), view)


@dataclass(frozen=True)
class NodeQuery:
    """Which nodes the answer lists: by name after ``cursor``, at most ``limit`` (None: all), those
    with GPUs serving ``gpu_type`` (None: any node), with at least ``free`` of them available, and in
    ``state`` (None: any)."""

    limit: int | None = None
    cursor: str | None = None
    gpu_type: str | None = None
    free: int = 0
    state: str | None = None  # one of NODE_STATES: only nodes in that state


ALL_NODES = NodeQuery()
NODE_STATES = ("ready", "cordoned", "not-ready")


def node_state(view: GpuNodeView) -> str:
    """What an admin calls it: not ready (down, unreachable) before cordoned (no new work)."""
    if not view.ready:
        return "not-ready"
    return "ready" if view.schedulable else "cordoned"


def _wanted(part: _NodePart, query: NodeQuery) -> bool:
    if query.state is not None and node_state(part.view) != query.state:
        return False
    if query.gpu_type is None and query.free == 0:
        return True
    serving = [row for row in part.per_type if query.gpu_type is None or satisfies(row[0], query.gpu_type)]
    return bool(serving) and sum(row[2] for row in serving) >= query.free


def select_nodes(
    names: Sequence[str], part_of: Mapping[str, _NodePart], query: NodeQuery
) -> tuple[list[str], str | None]:
    """The names of the nodes ``query`` lists, from ``names`` (sorted), and the next page's cursor."""
    if query is ALL_NODES:
        return list(names), None
    start = bisect.bisect_right(names, query.cursor) if query.cursor is not None else 0
    chosen: list[str] = []
    for name in names[start:]:
        if not _wanted(part_of[name], query):
            continue
        if query.limit is not None and len(chosen) == query.limit:
            return chosen, chosen[-1]  # more follow: the page ends at its last node
        chosen.append(name)
    return chosen, None


def _summaries(per_type: Mapping[str, list[int]], queued_demand: Mapping[str, int]) -> list[GpuTypeSummary]:
    merged = {gpu_type: list(counts) for gpu_type, counts in per_type.items()}
    for gpu_type in queued_demand:
        merged.setdefault(gpu_type, [0, 0, 0])
    return [
        GpuTypeSummary(
            gpu_type=gpu_type,
            total=total,
            available=available,
            used=used,
            queued_demand=queued_demand.get(gpu_type, 0),
        )
        for gpu_type, (total, available, used) in sorted(merged.items())
    ]


def _with_others(node: Node, held: Mapping[str, str], by_others: Mapping[str, int]) -> dict[str, str]:
    """``held`` plus the slots that workloads outside gpujobs hold on ``node``."""
    with_others = dict(held)
    for index in slots_held_by_others(node, with_others, by_others):
        with_others[index] = OTHER_WORKLOADS
    return with_others


def _by_node(held: Mapping[tuple[str, str], str]) -> dict[str, dict[str, str]]:
    by_node: dict[str, dict[str, str]] = {}
    for (node_name, index), holder in held.items():
        by_node.setdefault(node_name, {})[index] = holder
    return by_node


def build_gpu_status(
    inventory: Inventory,
    active_jobs: Sequence[JobRecord],
    queued_demand: Mapping[str, int],
    *,
    include_nodes: bool = True,
    external: Mapping[str, Sequence[str]] | None = None,
    viewer: str | None = None,
    stale: bool = False,
    synced_at: datetime | None = None,
    nodes: NodeQuery = ALL_NODES,
) -> GpuStatus:
    """``external``: per node, device slots held by workloads that are not gpujobs jobs.  ``viewer``:
    the user asking, who sees only their own job ids (None: an admin, who sees all).  ``nodes``: which
    nodes are listed (the totals count them all); all of them, in the inventory's order, by default."""
    held = _by_node(_held(active_jobs, external, viewer))
    per_type: dict[str, list[int]] = {}
    parts = {}
    for node in inventory.nodes:
        part = parts[node.name] = _node_part(node, held.get(node.name, {}))
        for gpu_type, *counts in part.per_type:
            totals = per_type.setdefault(gpu_type, [0, 0, 0])
            for i, count in enumerate(counts):
                totals[i] += count
    order = list(parts) if nodes is ALL_NODES else sorted(parts)
    listed, next_cursor = select_nodes(order, parts, nodes) if include_nodes else ([], None)
    summaries = _summaries(per_type, queued_demand)
    return GpuStatus(
        total_gpus=sum(s.total for s in summaries),
        available_gpus=sum(s.available for s in summaries),
        used_gpus=sum(s.used for s in summaries),
        gpu_types=summaries,
        gpu_nodes=[parts[name].view for name in listed],
        last_updated=inventory.updated_at,
        source=inventory.source,
        stale=stale,
        synced_at=synced_at,
        next_cursor=next_cursor,
    )


@dataclass(frozen=True)
class RenderedStatus:
    body: bytes  # GpuStatus as JSON, exactly as ``build_gpu_status(...).model_dump_json()``
    total_gpus: int
    available_gpus: int
    next_cursor: str | None = None

    def seen(self, stale: bool, synced_at: datetime | None) -> RenderedStatus:
        """The same answer with how current it is (that changes by the second, so it is not part of
        what is remembered: remembered answers end with the tail of a current view)."""
        if not stale and synced_at is None:
            return self
        current = _tail(False, None, self.next_cursor)
        tail = _tail(stale, synced_at, self.next_cursor)
        body = self.body[: -len(current)] + tail
        return RenderedStatus(body, self.total_gpus, self.available_gpus, self.next_cursor)


def _tail(stale: bool, synced_at: datetime | None, next_cursor: str | None) -> bytes:
    return b',"stale":%s,"synced_at":%s,"next_cursor":%s}' % (
        b"true" if stale else b"false",
        _OPTIONAL_DATETIME_JSON.dump_json(synced_at),
        _OPTIONAL_STR_JSON.dump_json(next_cursor),
    )


class _Parts(Mapping[str, "_NodePart"]):
    """The remembered nodes' parts, looked up without copying 5,000 of them into a dict per page."""

    def __init__(self, remembered: Mapping[str, _Remembered]) -> None:
        self._remembered = remembered

    def __getitem__(self, name: str) -> _NodePart:
        return self._remembered[name].part

    def __iter__(self) -> Iterator[str]:
        return iter(self._remembered)

    def __len__(self) -> int:
        return len(self._remembered)


@dataclass(frozen=True)
class _Remembered:
    node: Node
    signature: tuple[Any, ...]  # what holds its GPUs: (others' devices per type, our jobs' devices)
    part: _NodePart
    fragment: bytes  # its entry in gpu_nodes, as JSON
    public_fragment: bytes  # the same with every job id shown as OTHER_USERS


class GpuStatusCache:
    """``build_gpu_status(...).model_dump_json()``, remembered.

    Executors hand out the same ``Inventory`` object until something in it changes, and a node keeps
    its ``Node`` object until that node changes: both are compared by identity.  A repeated question
    costs a comparison of what holds GPUs; a change costs a walk over the nodes, rebuilding only those
    whose node or holders changed, and the per-type totals move by those nodes' differences.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _Remembered] = {}
        self._totals: dict[str, list[int]] = {}
        self._last: tuple[Any, ...] | None = None
        self._answers: dict[tuple[bool, bool], RenderedStatus] = {}  # (include_nodes, public) → answer
        self._active: Sequence[JobRecord] = ()
        self._holds: Mapping[str, Mapping[str, int]] = {}
        # For pages: the inventory's node names in order and its nodes by name, made once per inventory.
        self._sorted: tuple[Inventory | None, list[str], dict[str, Node]] = (None, [], {})

    def render(
        self,
        inventory: Inventory,
        active_jobs: Sequence[JobRecord],
        queued_demand: Mapping[str, int],
        *,
        include_nodes: bool,
        holds: Mapping[str, Mapping[str, int]],
        viewer: str | None = None,
        nodes: NodeQuery = ALL_NODES,
    ) -> RenderedStatus:
        """``holds``: per node, how many devices of each type workloads that are not gpujobs jobs hold
        (which slots they are shown in is ``slots_held_by_others``, as the scheduler counts them).
        ``viewer``: as in ``build_gpu_status``; the nodes where the viewer's own jobs run are rendered
        for them, every other node comes from the shared public rendering."""
        held_by_jobs = tuple((job.job_id, job.node, tuple(job.gpus)) for job in active_jobs if job.node)
        key = (held_by_jobs, dict(queued_demand))
        # ``holds`` is compared by identity first: executors hand out a new mapping when it changes.
        if (
            self._last is None
            or self._last[0] is not inventory
            or (self._last[1] is not holds and self._last[1] != holds)
            or self._last[2:] != key
        ):
            self._last = (inventory, holds, *key)
            self._answers = {}
            self._update(inventory, active_jobs, holds)
        own = {job.node for job in active_jobs if job.node and job.gpus and job.user == viewer}
        if include_nodes and nodes is not ALL_NODES:  # a page: small, and made for this question
            if self._sorted[0] is not inventory:
                by_name = {node.name: node for node in inventory.nodes}
                self._sorted = (inventory, sorted(by_name), by_name)
            _, names, by_name = self._sorted
            listed, next_cursor = select_nodes(names, _Parts(self._nodes), nodes)
            return self._assemble(
                inventory,
                queued_demand,
                include_nodes,
                public=viewer is not None,
                own=(viewer, own) if own else None,
                listed=[by_name[name] for name in listed],
                next_cursor=next_cursor,
            )
        if own and include_nodes:  # this viewer's own ids are in the answer: made for them alone
            return self._assemble(inventory, queued_demand, include_nodes, public=True, own=(viewer, own))
        public = viewer is not None
        answer = self._answers.get((include_nodes, public))
        if answer is None:
            answer = self._answers[(include_nodes, public)] = self._assemble(
                inventory, queued_demand, include_nodes, public=public
            )
        return answer

    def _update(
        self, inventory: Inventory, active_jobs: Sequence[JobRecord], holds: Mapping[str, Mapping[str, int]]
    ) -> None:
        ours = _by_node(holders(active_jobs))
        before, after = self._nodes, {}
        for node in inventory.nodes:
            on_node = ours.get(node.name)
            by_others = holds.get(node.name) or {}
            signature = (tuple(sorted(by_others.items())), tuple(sorted(on_node.items())) if on_node else ())
            known = before.pop(node.name, None)
            if known is not None and known.node is node and known.signature == signature:
                after[node.name] = known
                continue
            if known is not None:
                self._count(known.part, -1)
            part = _node_part(node, _with_others(node, on_node or {}, by_others))
            public = _node_part(
                node, _with_others(node, dict.fromkeys(on_node or {}, OTHER_USERS), by_others)
            )
            fragments = (part.view.model_dump_json().encode(), public.view.model_dump_json().encode())
            after[node.name] = _Remembered(node, signature, part, *fragments)
            self._count(part, +1)
        for gone in before.values():
            self._count(gone.part, -1)
        self._nodes = after
        self._active = active_jobs
        self._holds = holds

    def _count(self, part: _NodePart, sign: int) -> None:
        for gpu_type, total, available, used in part.per_type:
            counts = self._totals.setdefault(gpu_type, [0, 0, 0])
            counts[0] += sign * total
            counts[1] += sign * available
            counts[2] += sign * used
            if counts == [0, 0, 0]:
                del self._totals[gpu_type]

    def _fragment(self, node: Node, public: bool, own: tuple[str | None, set[str]] | None) -> bytes:
        remembered = self._nodes[node.name]
        if not public:
            return remembered.fragment
        if own is None or node.name not in own[1]:
            return remembered.public_fragment
        mine = _by_node(holders(self._active, own[0])).get(node.name, {})
        by_others = self._holds.get(node.name) or {}
        return _node_part(node, _with_others(node, mine, by_others)).view.model_dump_json().encode()

    def _assemble(
        self,
        inventory: Inventory,
        queued_demand: Mapping[str, int],
        include_nodes: bool,
        *,
        public: bool,
        own: tuple[str | None, set[str]] | None = None,
        listed: Sequence[Node] | None = None,
        next_cursor: str | None = None,
    ) -> RenderedStatus:
        summaries = _summaries(self._totals, queued_demand)
        total = sum(s.total for s in summaries)
        available = sum(s.available for s in summaries)
        used = sum(s.used for s in summaries)
        shown = inventory.nodes if listed is None else listed
        fragments = [self._fragment(node, public, own) for node in shown] if include_nodes else []
        body = b"".join(
            [
                b'{"total_gpus":%d,"available_gpus":%d,"used_gpus":%d,"gpu_types":'
                % (total, available, used),
                _TYPES_JSON.dump_json(summaries),
                b',"gpu_nodes":[',
                b",".join(fragments),
                b'],"last_updated":',
                _DATETIME_JSON.dump_json(inventory.updated_at),
                b',"source":',
                _STR_JSON.dump_json(inventory.source),
                _tail(False, None, next_cursor),
            ]
        )
        return RenderedStatus(body, total, available, next_cursor)

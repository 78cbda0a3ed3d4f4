"""The admission policy: pure, no I/O.  ``decide(requests, snapshot, config) -> Decision``.

One cycle, in numbered steps (the order matters):

1. **Order.**  Each queued job's *effective priority* is its priority level plus one step for every
   ``aging_interval_seconds`` it has waited (so nothing starves).  Among equal effective priority, the
   job whose group, then user, has less recent GPU usage (decayed GPU-seconds divided by the group's
   share) goes first; then the older one.  Usage is charged as jobs are admitted within the cycle, so
   one user cannot take everything in one go.
2. **Quota.**  A job that would take its user over their concurrent limits (GPUs in all, GPUs per type,
   running jobs) waits, with the limit named; the user's next job may still fit.
3. **Place.**  A job that fits is admitted onto the node that fits it most tightly (big free blocks stay
   whole for big jobs), or onto a node pool the cluster can still add (declared in config).
4. **Reserve.**  The first jobs that do not fit get a *reservation*: the node where enough GPUs free up
   earliest (running jobs' timeouts bound their end).  Later jobs may use a reserved node only if their
   own timeout ends before the reservation (backfill), so a small job never delays a bigger, more
   important one.
5. **Explain.**  Every job left waiting gets its position and a reason a person can act on.

As each job comes up, before its quota, it is checked against the one definition of "fits" the
submit check uses too (``fit``): a job no node could ever hold is queued only when the cluster shrank
(or its quota changed) after it was accepted.  It waits with the reason ("can never start here: ..."),
takes no reservation and holds no one back.  CPU and memory are held like GPUs, per node (a node whose
memory is unknown is not limited by it).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..fit import ClusterSizes, Shape, describe, serves, size_text
from ..gputypes import ANY, satisfies
from ..inventory import Node

UNLIMITED = None


@dataclass(frozen=True)
class Quota:
    """Concurrent limits of one user (None: no limit).  Resolved from config by ``quotas.resolve``."""

    max_gpus: int | None = None
    max_gpus_per_type: Mapping[str, int] = field(default_factory=dict)
    max_running_jobs: int | None = None
    allowed_gpu_types: tuple[str, ...] | None = None


NO_QUOTA = Quota()


@dataclass(frozen=True)
class Request:
    """A queued job, as far as the policy cares."""

    job_id: str
    gpu_count: int
    gpu_type: str = ANY
    cpu: float = 0.0
    user: str = ""
    group: str = "default"
    priority: int = 1
    submitted_at: float = 0.0
    runtime_limit: float | None = None  # its timeout: bounds its end, for backfill
    quota: Quota = NO_QUOTA
    seq: int = 0
    memory: float = 0.0  # bytes (its memory limit); 0: none asked


@dataclass(frozen=True)
class Running:
    """An active (pending or running) job: what it holds and when it ends at the latest."""

    job_id: str
    user: str
    node: str | None
    gpus: tuple[str, ...] = ()
    gpu_count: int = 0
    cpu: float = 0.0
    group: str = "default"
    ends_at: float | None = None
    pool: str | None = None  # admitted onto a node pool the cluster has yet to add
    memory: float = 0.0  # bytes it holds on its node


@dataclass(frozen=True)
class Pool:
    """GPU nodes the cluster can add (an autoscaling node pool)."""

    gpu_type: str
    gpus_per_node: int
    max_nodes: int


@dataclass(frozen=True)
class PolicyConfig:
    aging_interval_seconds: float = 3600.0
    group_shares: Mapping[str, float] = field(default_factory=dict)
    pools: tuple[Pool, ...] = ()
    max_reservations: int = 16


@dataclass(frozen=True)
class Snapshot:
    """The nodes, the active jobs, recent usage (decayed GPU-seconds) and the time of the cycle."""

    nodes: tuple[Node, ...]
    running: tuple[Running, ...] = ()
    user_usage: Mapping[str, float] = field(default_factory=dict)
    group_usage: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0


@dataclass(frozen=True)
class Admission:
    job_id: str
    node: str | None
    gpus: tuple[str, ...]
    pool: str | None = None


@dataclass(frozen=True)
class Waiting:
    job_id: str
    position: int
    reason: str


@dataclass(frozen=True)
class Decision:
    admissions: tuple[Admission, ...]
    waiting: tuple[Waiting, ...]


@dataclass
class _Reservation:
    job_id: str
    user: str
    node: str
    starts_at: float
    gpu_type: str


# --- capacity -------------------------------------------------------------------------------------


class _Capacity:
    """Free devices per node and exact type, bucketed by how many are free, for fast tightest fits."""

    def __init__(self, nodes: Sequence[Node], running: Sequence[Running], pools: Sequence[Pool]) -> None:
        held: dict[str, set[str]] = defaultdict(set)
        cpu_used: dict[str, float] = defaultdict(float)
        memory_used: dict[str, float] = defaultdict(float)
        for job in running:
            if job.node:
                held[job.node].update(job.gpus)
                cpu_used[job.node] += job.cpu
                if job.memory:
                    memory_used[job.node] += job.memory
        self.nodes = {node.name: node for node in nodes}
        self.device_types = {
            (node.name, device.index): device.gpu_type for node in nodes for device in node.devices
        }
        self.free: dict[str, dict[str, list[str]]] = {}
        self.cpu: dict[str, float] = {}
        self.memory: dict[str, float] = {}  # free bytes; infinite where the node's memory is unknown
        self.buckets: dict[str, dict[int, dict[str, None]]] = defaultdict(lambda: defaultdict(dict))
        self.total_by_type: dict[str, int] = defaultdict(int)
        for node in nodes:
            for device in node.devices:
                self.total_by_type[device.gpu_type] += 1
            if not node.offers:
                continue
            by_type: dict[str, list[str]] = defaultdict(list)
            for device in node.devices:
                if device.index not in held[node.name]:
                    by_type[device.gpu_type].append(device.index)
            self.free[node.name] = dict(by_type)
            self.cpu[node.name] = node.cpu_cores - cpu_used[node.name]
            self.memory[node.name] = (
                node.memory_bytes - memory_used.get(node.name, 0.0) if node.memory_bytes > 0 else math.inf
            )
            for gpu_type, indices in by_type.items():
                self.buckets[gpu_type][len(indices)][node.name] = None
        self.types = sorted(self.total_by_type)
        self.nodes_with: dict[str, list[str]] = defaultdict(list)  # offering nodes that have a type
        for node in nodes:
            if node.offers:
                for gpu_type in {device.gpu_type for device in node.devices}:
                    self.nodes_with[gpu_type].append(node.name)
        self.offered_by_type: dict[str, int] = defaultdict(int)
        for node in nodes:
            if node.offers:
                for device in node.devices:
                    self.offered_by_type[device.gpu_type] += 1
        self.largest_cpu = max((node.cpu_cores for node in nodes if node.offers), default=0.0)
        self.largest_memory = max(
            (node.memory_bytes or math.inf for node in nodes if node.offers), default=0.0
        )
        self.version = 0  # bumped by every take: explanations are cached per version
        self._matching: dict[str, list[str]] = {}
        # Node pools: GPUs the cluster can still add, minus what jobs already admitted there hold.
        self.pool_free: dict[str, int] = {}
        for pool in pools:
            present = sum(1 for node in nodes for d in node.devices if satisfies(d.gpu_type, pool.gpu_type))
            waiting = sum(job.gpu_count for job in running if job.pool == pool.gpu_type)
            self.pool_free[pool.gpu_type] = max(0, pool.gpus_per_node * pool.max_nodes - present - waiting)
        self.pools = {pool.gpu_type: pool for pool in pools}

    def matching_types(self, wanted: str, allowed: tuple[str, ...] | None) -> list[str]:
        key = f"{wanted}|{allowed}"
        if key not in self._matching:
            self._matching[key] = [t for t in self.types if serves(t, wanted, allowed)]
        return self._matching[key]

    def find(
        self, request: Request, *, usable: Mapping[str, bool] | None = None
    ) -> tuple[str, list[str]] | None:
        """The tightest node and devices for the request, skipping nodes ``usable`` marks False."""
        if request.gpu_count == 0:
            return self._find_cpu_only(request, usable)
        cpu, memory = request.cpu, request.memory
        best: tuple[int, str, str] | None = None
        for gpu_type in self.matching_types(request.gpu_type, request.quota.allowed_gpu_types):
            buckets = self.buckets.get(gpu_type)
            if not buckets:
                continue
            for count in sorted(c for c in buckets if c >= request.gpu_count):
                if best is not None and count >= best[0]:
                    break
                chosen = next(
                    (
                        name
                        for name in buckets[count]
                        if (usable is None or usable.get(name, True))
                        and (cpu <= 0 or self.cpu[name] + 1e-9 >= cpu)
                        and (memory <= 0 or self.memory[name] + 1e-9 >= memory)
                    ),
                    None,
                )
                if chosen is not None:
                    best = (count, chosen, gpu_type)
                    break
        if best is None:
            return None
        _count, node, gpu_type = best
        return node, self.free[node][gpu_type][: request.gpu_count]

    def fits_on(self, request: Request, name: str) -> bool:
        """Whether the request fits on this one node now (reservations aside)."""
        # The CPU and memory test of ``_spare_on``, inlined: this runs for every reserved node, per job.
        cpu, memory = request.cpu, request.memory
        if (
            name not in self.free
            or (cpu > 0 and self.cpu[name] + 1e-9 < cpu)
            or (memory > 0 and self.memory[name] + 1e-9 < memory)
        ):
            return False
        types = self.matching_types(request.gpu_type, request.quota.allowed_gpu_types)
        return any(len(self.free[name].get(gpu_type, ())) >= request.gpu_count for gpu_type in types) or (
            request.gpu_count == 0
        )

    def _find_cpu_only(
        self, request: Request, usable: Mapping[str, bool] | None
    ) -> tuple[str, list[str]] | None:
        for name in self.cpu:
            if (usable is None or usable.get(name, True)) and self._spare_on(request, name):
                return name, []
        return None

    def _spare_on(self, request: Request, name: str) -> bool:
        """Whether the node has the CPU and memory the request asks for free now."""
        return (request.cpu <= 0 or self.cpu[name] + 1e-9 >= request.cpu) and (
            request.memory <= 0 or self.memory[name] + 1e-9 >= request.memory
        )

    def take(self, node: str, devices: list[str], cpu: float, memory: float = 0.0) -> None:
        self.version += 1
        self.cpu[node] -= max(cpu, 0.0)
        self.memory[node] -= max(memory, 0.0)
        if not devices:
            return
        gpu_type = self.device_types[(node, devices[0])]
        free = self.free[node][gpu_type]
        del self.buckets[gpu_type][len(free)][node]
        remaining = [index for index in free if index not in devices]
        self.free[node][gpu_type] = remaining
        if remaining:
            self.buckets[gpu_type][len(remaining)][node] = None

    def take_pool(self, request: Request) -> str | None:
        for gpu_type, spare in self.pool_free.items():
            fits = spare >= request.gpu_count and request.gpu_count <= self.pools[gpu_type].gpus_per_node
            if fits and serves(gpu_type, request.gpu_type, request.quota.allowed_gpu_types):
                self.pool_free[gpu_type] = spare - request.gpu_count
                self.version += 1
                return gpu_type
        return None

    def free_matching(self, request: Request) -> tuple[int, int, int]:
        """(free in all, most free on one node, total) of the devices that could serve the request."""
        types = self.matching_types(request.gpu_type, request.quota.allowed_gpu_types)
        free_total = most = 0
        for gpu_type in types:
            for count, names in self.buckets.get(gpu_type, {}).items():
                if names:
                    free_total += count * len(names)
                    most = max(most, count)
        total = sum(self.total_by_type[t] for t in types)
        return free_total, most, total


# --- quota ------------------------------------------------------------------------------------------


@dataclass
class _UserUse:
    gpus: int = 0
    jobs: int = 0
    devices: list[tuple[str, int]] = field(default_factory=list)  # (device type, count) held

    def of_type(self, limited: str) -> int:
        return sum(count for device_type, count in self.devices if satisfies(device_type, limited))

    def add(self, gpu_count: int, device_type: str | None) -> None:
        self.gpus += gpu_count
        self.jobs += 1
        if device_type is not None and gpu_count:
            self.devices.append((device_type, gpu_count))


def _quota_problem(request: Request, use: _UserUse, device_type: str | None) -> str | None:
    quota = request.quota
    name = request.user
    if quota.max_running_jobs is not None and use.jobs + 1 > quota.max_running_jobs:
        return f"quota: {name} runs {use.jobs} of {quota.max_running_jobs} jobs"
    if quota.max_gpus is not None and use.gpus + request.gpu_count > quota.max_gpus:
        return f"quota: {name} uses {use.gpus} of {quota.max_gpus} GPUs"
    if device_type is not None:
        for limited, limit in quota.max_gpus_per_type.items():
            if satisfies(device_type, limited) and use.of_type(limited) + request.gpu_count > limit:
                return f"quota: {name} uses {use.of_type(limited)} of {limit} {limited} GPUs"
    return None


# --- ordering ---------------------------------------------------------------------------------------


def effective_priority(request: Request, now: float, config: PolicyConfig) -> int:
    waited = max(0.0, now - request.submitted_at)
    return request.priority + int(waited // config.aging_interval_seconds)


class _Order:
    """Pops jobs in policy order, re-ranking users as their usage grows within the cycle.

    One heap entry per user (their best queued job).  Usage only grows within a cycle, so keys only
    get worse: an entry is re-checked when popped, and only if its user's or group's usage changed
    since it was pushed (a charge counter says so).
    """

    def __init__(self, requests: Sequence[Request], snapshot: Snapshot, config: PolicyConfig) -> None:
        self.config = config
        self.user_usage = defaultdict(float, snapshot.user_usage)
        self.group_usage = defaultdict(float, snapshot.group_usage)
        self.charges: dict[str, int] = defaultdict(int)  # by user and by "group:" + name
        per_user: dict[str, list[tuple[int, int, Request]]] = defaultdict(list)
        aging = config.aging_interval_seconds
        now = snapshot.now
        for request in requests:
            level = request.priority + int(max(0.0, now - request.submitted_at) // aging)
            per_user[request.user].append((-level, request.seq, request))
        self.queues = {
            user: sorted(items, key=lambda item: (item[0], item[1])) for user, items in per_user.items()
        }
        self.cursor = dict.fromkeys(self.queues, 0)
        self.heap = [self._entry(user) for user in self.queues]
        heapq.heapify(self.heap)

    def _entry(self, user: str) -> tuple[int, float, float, int, str, int]:
        negative_level, seq, request = self.queues[user][self.cursor[user]]
        share = max(self.config.group_shares.get(request.group, 1.0), 1e-9)
        group_ratio = self.group_usage[request.group] / share
        stamp = self.charges[user] + self.charges["group:" + request.group]
        return (negative_level, group_ratio, self.user_usage[user], seq, user, stamp)

    def pop(self) -> Request | None:
        while self.heap:
            entry = heapq.heappop(self.heap)
            user = entry[4]
            request = self.queues[user][self.cursor[user]][2]
            if entry[5] != self.charges[user] + self.charges["group:" + request.group]:
                fresh = self._entry(user)  # usage grew since it was pushed: re-rank if it fell behind
                if self.heap and fresh[:5] > self.heap[0][:5]:
                    heapq.heappush(self.heap, fresh)
                    continue
            self.cursor[user] += 1
            if self.cursor[user] < len(self.queues[user]):
                heapq.heappush(self.heap, self._entry(user))
            return request
        return None

    def charge(self, request: Request) -> None:
        """Count an admission as usage, so the user's next job ranks as if it were running already."""
        horizon = request.runtime_limit or self.config.aging_interval_seconds
        cost = max(request.gpu_count, 0.1) * horizon
        self.user_usage[request.user] += cost
        self.group_usage[request.group] += cost
        self.charges[request.user] += 1
        self.charges["group:" + request.group] += 1


# --- the cycle --------------------------------------------------------------------------------------


def _releases(capacity: _Capacity, running: Sequence[Running]) -> dict[str, list[tuple[float, list[str]]]]:
    """Per node, what running jobs will give back and when at the latest: (end, device types), sorted."""
    releases: dict[str, list[tuple[float, list[str]]]] = defaultdict(list)
    types = capacity.device_types
    for job in running:
        if job.node and job.node in capacity.free and job.ends_at is not None and job.gpus:
            node = job.node
            releases[node].append((job.ends_at, [types[(node, i)] for i in job.gpus if (node, i) in types]))
    for entries in releases.values():
        entries.sort(key=lambda entry: entry[0])
    return releases


def _reserve(
    request: Request,
    capacity: _Capacity,
    releases: Mapping[str, list[tuple[float, list[str]]]],
    taken: set[str],
    sizes: ClusterSizes,
) -> _Reservation | None:
    """The node where enough GPUs of one matching type free up earliest, given running jobs' latest
    ends; only nodes that could hold the whole job once empty (CPU and memory too) are considered."""
    types = set(capacity.matching_types(request.gpu_type, request.quota.allowed_gpu_types))
    if not types or request.gpu_count == 0:
        return None
    # A reservation on a node the job can never run on would hold that node back from everyone.
    holding = sizes.nodes_fitting(_shape(request)) if request.cpu > 0 or request.memory > 0 else None
    needed = request.gpu_count
    best: _Reservation | None = None
    candidates = {name for gpu_type in types for name in capacity.nodes_with.get(gpu_type, ())}
    for name in sorted(candidates):
        if name in taken or (holding is not None and name not in holding):
            continue
        # Counted per exact type: a job's GPUs are all of one type.
        when: float | None = None
        have: dict[str, int] = {}
        for gpu_type, indices in capacity.free[name].items():
            if gpu_type in types:
                have[gpu_type] = len(indices)
                if len(indices) >= needed:
                    when = 0.0
        if when is None:
            for ends_at, released in releases.get(name, ()):
                if best is not None and ends_at >= best.starts_at:
                    break
                for gpu_type in released:
                    if gpu_type in types:
                        have[gpu_type] = count = have.get(gpu_type, 0) + 1
                        if count >= needed:
                            when = ends_at
                if when is not None:
                    break
        if when is not None and (best is None or when < best.starts_at):
            best = _Reservation(request.job_id, request.user, name, when, request.gpu_type)
    return best


def _shape(request: Request) -> Shape:
    return Shape(
        request.gpu_type, request.gpu_count, request.cpu, request.memory, request.quota.allowed_gpu_types
    )


NEVER_FITS = "can never start here: "


def decide(requests: Sequence[Request], snapshot: Snapshot, config: PolicyConfig | None = None) -> Decision:
    """Admit what fits, in policy order, within quotas and reservations; say why the rest waits.

    A job no node could ever hold (the cluster shrank after it was accepted) waits with the reason
    ("can never start here: ..."), takes no reservation and holds no one back."""
    config = config or PolicyConfig()
    capacity = _Capacity(snapshot.nodes, snapshot.running, config.pools)
    # The same pools the submit check is given (type, GPUs per node), so both agree on what is possible.
    sizes = ClusterSizes(snapshot.nodes, [(pool.gpu_type, pool.gpus_per_node) for pool in config.pools])
    never: dict[tuple[object, ...], str] = {}  # per shape: why it can never start ("" when it can)
    use: dict[str, _UserUse] = defaultdict(_UserUse)
    device_types = capacity.device_types
    for job in snapshot.running:
        held_type = device_types.get((job.node or "", job.gpus[0])) if job.gpus else job.pool
        use[job.user].add(job.gpu_count, held_type)
    order = _Order(requests, snapshot, config)
    reservations: list[_Reservation] = []
    reserved_nodes: dict[str, _Reservation] = {}
    admissions: list[Admission] = []
    waiting: list[Waiting] = []
    # Capacity only shrinks within a cycle, so a shape that found no room (with the same reserved nodes
    # usable) will not find any later in the cycle: long queues of similar jobs cost one search per shape.
    no_room: set[tuple[object, ...]] = set()
    blocked_by: dict[tuple[object, ...], _Reservation | None] = {}
    explained: dict[tuple[object, ...], str] = {}
    releases: dict[str, list[tuple[float, list[str]]]] | None = None
    by_start: list[_Reservation] = []  # reservations, soonest first
    usable_maps: dict[int, dict[str, bool]] = {}

    def usable_for(ends_at: float) -> tuple[int, dict[str, bool]]:
        """Which reserved nodes a job ending at ``ends_at`` may use: those reserved from that time on.
        Returned with how many reservations it must respect (the same for many jobs: cached)."""
        blocked = bisect.bisect_left([r.starts_at for r in by_start], ends_at)
        if blocked not in usable_maps:
            usable_maps[blocked] = {r.node: index >= blocked for index, r in enumerate(by_start)}
        return blocked, usable_maps[blocked]

    def wait(request: Request, reason: str) -> None:
        waiting.append(Waiting(request.job_id, len(waiting) + 1, reason))

    while (request := order.pop()) is not None:
        fit = (
            request.gpu_type,
            request.gpu_count,
            request.cpu,
            request.memory,
            request.quota.allowed_gpu_types,
        )
        impossible = never.get(fit)
        if impossible is None:
            impossible = never[fit] = sizes.never_fits(_shape(request)) or ""
        if impossible:
            wait(request, NEVER_FITS + impossible)
            continue
        problem = _quota_problem(request, use[request.user], None)
        if problem:
            wait(request, problem)
            continue
        ends_at = snapshot.now + request.runtime_limit if request.runtime_limit else math.inf
        level, usable = usable_for(ends_at)
        shape = (*fit, level, len(reserved_nodes))
        placed = None if shape in no_room else capacity.find(request, usable=usable)
        if placed is not None:
            node, devices = placed
            device_type = device_types[(node, devices[0])] if devices else None
            problem = _quota_problem(request, use[request.user], device_type)
            if problem:
                wait(request, problem)
                continue
            capacity.take(node, devices, request.cpu, request.memory)
            use[request.user].add(request.gpu_count, device_type)
            order.charge(request)
            admissions.append(Admission(request.job_id, node, tuple(devices)))
            continue
        no_room.add(shape)
        pool = capacity.take_pool(request) if request.gpu_count else None
        if pool is not None:
            use[request.user].add(request.gpu_count, pool)
            order.charge(request)
            admissions.append(Admission(request.job_id, None, (), pool=pool))
            continue
        if shape not in blocked_by:
            blocked_by[shape] = _blocking_reservation(request, capacity, reserved_nodes)
        blocker = blocked_by[shape]
        if blocker is not None:
            # Another user's job is named by its user's side of the tenancy line: not by its id.
            ahead = f"your job {blocker.job_id}" if blocker.user == request.user else "another user's job"
            wait(request, f"waiting behind {ahead}, which has a reservation on {blocker.node}")
            continue
        if len(reservations) < config.max_reservations:
            if releases is None:
                releases = _releases(capacity, snapshot.running)
            reservation = _reserve(request, capacity, releases, set(reserved_nodes), sizes)
            if reservation is not None:
                reservations.append(reservation)
                reserved_nodes[reservation.node] = reservation
                by_start.append(reservation)
                by_start.sort(key=lambda r: r.starts_at)
                usable_maps.clear()
        key = (shape, capacity.version)
        if key not in explained:
            explained[key] = explain_wait(request, capacity)
        wait(request, explained[key])
    return Decision(tuple(admissions), tuple(waiting))


def _blocking_reservation(
    request: Request, capacity: _Capacity, reserved: Mapping[str, _Reservation]
) -> _Reservation | None:
    """The reservation that keeps this job off a node where it would otherwise fit."""
    if not reserved:
        return None
    for name, reservation in reserved.items():
        if capacity.fits_on(request, name):
            return reservation
    return None


def explain_wait(request: Request, capacity: _Capacity) -> str:
    """Why ``request``, which could fit some node, cannot start now, in words ("no free a100: 0 of 2
    free, 1 needed").  Jobs that can never fit are explained by ``fit.never_fits`` instead."""
    label = "GPU" if request.gpu_type == ANY else request.gpu_type
    allowed = request.quota.allowed_gpu_types
    if request.gpu_count:
        free_count, most, total = capacity.free_matching(request)
        types = capacity.matching_types(request.gpu_type, allowed)
        offered = sum(capacity.offered_by_type.get(gpu_type, 0) for gpu_type in types)
        pool = next(
            (
                p
                for p in capacity.pools.values()
                if serves(p.gpu_type, request.gpu_type, allowed) and p.gpus_per_node >= request.gpu_count
            ),
            None,
        )
        if pool is not None and free_count < request.gpu_count:
            size = pool.gpus_per_node * pool.max_nodes
            return (
                f"the {pool.gpu_type} node pool is at its declared size ({size} GPUs, "
                f"{capacity.pool_free[pool.gpu_type]} not yet claimed); waiting for running jobs to end"
            )
        if total == 0:
            return f"no {label} in the inventory"
        if offered == 0:
            return f"no {label} available: every node with one is cordoned or not ready"
        if free_count < request.gpu_count:
            return f"no free {label}: {free_count} of {total} free, {request.gpu_count} needed"
        if most < request.gpu_count:
            return (
                f"needs {request.gpu_count} free {label}s on one node; {free_count} of {total} are free, "
                f"at most {most} on one node"
            )
    # Bigger nodes exist (else the job could never fit), but none of them is offering now.
    if request.cpu > capacity.largest_cpu + 1e-9:
        return (
            f"needs {request.cpu:g} CPU cores but the largest available node has {capacity.largest_cpu:g}; "
            "larger ones are cordoned or not ready"
        )
    if request.memory > capacity.largest_memory + 1e-9:
        return (
            f"needs {size_text(request.memory)} of memory but the largest available node has "
            f"{size_text(capacity.largest_memory)}; larger ones are cordoned or not ready"
        )
    if not capacity.cpu:
        return "no node available: every node is cordoned or not ready"
    spare = max(capacity.cpu.values(), default=0.0)
    if request.cpu > 0 and spare + 1e-9 < request.cpu:
        return f"waiting for CPU: needs {request.cpu:g} cores, at most {max(spare, 0):g} free on one node"
    spare_memory = max(capacity.memory.values(), default=0.0)
    if request.memory > 0 and spare_memory + 1e-9 < request.memory:
        return (
            f"waiting for memory: needs {size_text(request.memory)}, "
            f"at most {size_text(max(spare_memory, 0))} free on one node"
        )
    return f"waiting for one node with {describe(_shape(request))} free at once"

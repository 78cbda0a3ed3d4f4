"""The gpu-status answer: what it counts, and that the remembering renderer answers exactly as the
plain definition does, however the cluster and the jobs change between questions."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import datetime, timezone

import builders
from builders import stored_job
from gpujobs.gpustatus import ALL_NODES, GpuStatusCache, NodeQuery, build_gpu_status
from gpujobs.inventory import Inventory, Node
from gpujobs.models import JobStatus
from gpujobs.scheduler.loop import external_devices

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def running(job_id: str, on: str, *gpus: str, user: str = "alice"):
    return stored_job(job_id, status=JobStatus.RUNNING, user=user, node=on, gpus=gpus)


def inventory(*nodes: Node) -> Inventory:
    return builders.inventory(*nodes, source="kubernetes", at=NOW)


node = builders.node_of


def test_counts_per_type_and_per_node() -> None:
    inv = inventory(node("a"), node("b", "t4-16gb", 2), node("c", ready=False))
    status = build_gpu_status(
        inv, [running("j1", "a", "0", "1")], {"t4-16gb": 3, "any": 1}, external={"b": ["1"]}
    )
    summary = {t.gpu_type: (t.total, t.available, t.used, t.queued_demand) for t in status.gpu_types}
    # "c" is NotReady: its GPUs are neither free nor used; "any" shows demand only.
    assert summary == {"a100-80gb": (8, 2, 2, 0), "t4-16gb": (2, 1, 1, 3), "any": (0, 0, 0, 1)}
    b = next(n for n in status.gpu_nodes if n.name == "b")
    assert [d.job_id for d in b.devices] == [None, "other-workloads"]


QUERIES = [
    ALL_NODES,
    NodeQuery(limit=2),
    NodeQuery(limit=2, cursor="n1"),
    NodeQuery(gpu_type="a100", free=1),
    NodeQuery(gpu_type="t4", limit=1, cursor="n0"),
    NodeQuery(free=4),
    NodeQuery(cursor="n9"),  # past the last node: an empty page
]


def test_the_cache_answers_as_the_definition_does_through_changes() -> None:
    cache = GpuStatusCache()
    nodes = [node(f"n{i}", "a100-80gb" if i % 2 else "t4-16gb", 4) for i in range(6)]
    active = [running("j1", "n1", "0")]
    demand: dict[str, int] = {}
    # n1: one of its four GPUs is our job's, so three can be the others'
    holds = {"n2": {"t4-16gb": 1}, "n1": {"a100-80gb": 4}}

    def check(inv: Inventory) -> None:
        external = external_devices(inv, active, holds)
        for include_nodes, viewer, query in itertools.product(
            (True, False), (None, "alice", "bob", "carol"), QUERIES
        ):
            rendered = cache.render(
                inv, active, demand, include_nodes=include_nodes, holds=holds, viewer=viewer, nodes=query
            )
            expected = build_gpu_status(
                inv,
                active,
                demand,
                include_nodes=include_nodes,
                external=external,
                viewer=viewer,
                nodes=query,
            )
            assert json.loads(rendered.body) == json.loads(expected.model_dump_json())
            assert rendered.body == expected.model_dump_json().encode()
            assert (rendered.total_gpus, rendered.available_gpus) == (
                expected.total_gpus,
                expected.available_gpus,
            )

    first = inventory(*nodes)
    check(first)
    check(first)  # asked again: the same
    active = [*active, running("j2", "n3", "1", "2", user="bob"), running("j3", "n1", "2", user="bob")]
    check(first)  # jobs started: bob's, one beside alice's
    demand = {"a100": 2}
    check(first)  # demand changed
    nodes[4] = dataclasses.replace(nodes[4], schedulable=False)
    holds = {"n1": {"a100-80gb": 1}}
    check(inventory(*nodes))  # a node was cordoned and another workload ended
    check(inventory(*nodes[:3]))  # nodes went away
    active = []
    check(inventory(*nodes[:3]))


def test_users_see_only_their_own_job_ids_and_admins_see_all() -> None:
    inv = inventory(node("a"))
    active = [running("mine", "a", "0", user="alice"), running("theirs", "a", "1", user="bob")]

    def holders_as(viewer: str | None) -> list[str | None]:
        rendered = GpuStatusCache().render(inv, active, {}, include_nodes=True, holds={}, viewer=viewer)
        return [d["job_id"] for d in json.loads(rendered.body)["gpu_nodes"][0]["devices"]]

    assert holders_as("alice") == ["mine", "other-users", None, None]
    assert holders_as("bob") == ["other-users", "theirs", None, None]
    assert holders_as("carol") == ["other-users", "other-users", None, None]
    assert holders_as(None) == ["mine", "theirs", None, None]


def test_the_cache_does_not_build_twice_for_the_same_question() -> None:
    cache = GpuStatusCache()
    inv = inventory(node("a"), node("b"))
    first = cache.render(inv, [], {}, include_nodes=True, holds={})
    assert cache.render(inv, [], {}, include_nodes=True, holds={}) is first
    other = cache.render(inventory(*inv.nodes), [], {}, include_nodes=True, holds={})  # a new inventory
    assert other is not first and other.body == first.body
    assert cache.render(inv, [], {}, include_nodes=True, holds={"a": {"a100-80gb": 1}}).available_gpus == 7


def test_a_stale_view_says_so_and_when_it_was_last_in_sync() -> None:
    inv = inventory(node("a"))
    synced = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    rendered = GpuStatusCache().render(inv, [], {}, include_nodes=True, holds={}).seen(True, synced)
    expected = build_gpu_status(inv, [], {}, stale=True, synced_at=synced)
    assert rendered.body == expected.model_dump_json().encode()
    answer = json.loads(rendered.body)
    assert (answer["stale"], answer["synced_at"]) == (True, "2026-12-01T09:30:00Z")


def test_pages_of_nodes_cover_the_matching_nodes_once_and_the_totals_count_all() -> None:
    nodes = [node(f"n{i:02}", "a100-80gb" if i % 3 else "t4-16gb", 2) for i in range(10)]
    inv = inventory(*reversed(nodes))  # pages go by name, whatever the inventory's order
    active = [running("busy", "n01", "0", "1")]  # n01's a100s are both taken
    cache = GpuStatusCache()
    seen, cursor, pages = [], None, 0
    while True:
        query = NodeQuery(limit=3, cursor=cursor, gpu_type="a100", free=2)
        body = json.loads(cache.render(inv, active, {}, include_nodes=True, holds={}, nodes=query).body)
        assert body["total_gpus"] == 20 and body["available_gpus"] == 18  # every node counted
        seen += [n["name"] for n in body["gpu_nodes"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    wanted = [f"n{i:02}" for i in range(10) if i % 3 and i != 1]
    assert seen == wanted and pages == 2  # 5 nodes: 3, then 2 (and no empty page after)
    everything = json.loads(cache.render(inv, active, {}, include_nodes=True, holds={}).body)
    assert everything["next_cursor"] is None and len(everything["gpu_nodes"]) == 10


def test_a_stale_page_keeps_its_cursor() -> None:
    inv = inventory(node("a"), node("b"))
    synced = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    page = GpuStatusCache().render(inv, [], {}, include_nodes=True, holds={}, nodes=NodeQuery(limit=1))
    body = json.loads(page.seen(True, synced).body)
    assert (body["stale"], body["next_cursor"], [n["name"] for n in body["gpu_nodes"]]) == (True, "a", ["a"])


def test_nodes_are_listed_by_state_a_node_down_before_cordoned() -> None:
    inv = inventory(
        node("up", "t4", 1),
        node("drained", "t4", 1, schedulable=False),
        node("down", "t4", 1, ready=False),
        node("down-and-drained", "t4", 1, ready=False, schedulable=False),
    )

    def names(state: str) -> list[str]:
        query = NodeQuery(limit=10, state=state)
        body = json.loads(
            GpuStatusCache().render(inv, [], {}, include_nodes=True, holds={}, nodes=query).body
        )
        assert body["total_gpus"] == 4  # the totals still count every node
        return [n["name"] for n in body["gpu_nodes"]]

    assert names("ready") == ["up"]
    assert names("cordoned") == ["drained"]
    assert names("not-ready") == ["down", "down-and-drained"]

"""Builders for the pure tiers' tests: nodes with devices, in one line."""

from __future__ import annotations

from gpujobs.inventory import Device, Node

GI = 2**30


def node(
    name: str,
    *types: str,
    cpu: float = 64,
    memory: float = 0,
    ready: bool = True,
    schedulable: bool = True,
) -> Node:
    """A node with one device per type given (``node("n1", "a100", "a100")``: two a100s)."""
    devices = tuple(Device(index=str(i), gpu_type=t, product=t.upper()) for i, t in enumerate(types))
    return Node(
        name=name,
        devices=devices,
        cpu_cores=cpu,
        memory_bytes=memory,
        ready=ready,
        schedulable=schedulable,
    )

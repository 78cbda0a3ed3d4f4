"""This machine's GPUs: real ones from NVML, simulated ones from ``--simulate-gpus``."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping

from ..errors import InvalidSpec
from ..gputypes import is_canonical, normalise_gpu_type
from ..inventory import Device

log = logging.getLogger(__name__)


def discover_nvml(aliases: Mapping[str, str] | None = None) -> list[Device]:
    """The GPUs NVML sees, or ``[]`` without the library, a driver or GPUs (never an exception)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no NVIDIA GPUs found (%s)", exc)
        return []
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            product = _text(pynvml.nvmlDeviceGetName(handle))
            memory_mib = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20)
            try:
                utilization: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = None
            devices.append(
                Device(
                    index=str(index),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    product=product,
                    gpu_type=normalise_gpu_type(product, memory_mib=memory_mib, aliases=aliases),
                    memory_mib=memory_mib,
                    utilization_percent=utilization,
                )
            )
        return devices
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return []
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_SIM_ITEM = re.compile(r"^(?P<type>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<count>\d+)$")


def parse_simulated(spec: str) -> list[tuple[str, int]]:
    """``a100-80gb:2,t4:1`` → ``[("a100-80gb", 2), ("t4", 1)]``."""
    items = []
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        match = _SIM_ITEM.match(part)
        if not match or int(match.group("count")) < 1 or int(match.group("count")) > 64:
            raise InvalidSpec(
                f"--simulate-gpus: {part!r} is not TYPE:COUNT (e.g. 'a100-80gb:2,t4:1', count 1 to 64)",
                field="simulate_gpus",
            )
        gpu_type = normalise_gpu_type(match.group("type"))
        if not is_canonical(gpu_type):
            raise InvalidSpec(f"--simulate-gpus: {part!r} has no usable GPU type", field="simulate_gpus")
        items.append((gpu_type, int(match.group("count"))))
    return items


def simulated_devices(spec: str, first_index: int = 0) -> list[Device]:
    """Simulated devices numbered after the real ones, so a job never mistakes one for the other."""
    devices = []
    index = first_index
    for gpu_type, count in parse_simulated(spec):
        for _ in range(count):
            devices.append(
                Device(
                    index=str(index),
                    uuid=f"SIM-{gpu_type}-{index}",
                    product=f"Simulated {gpu_type.upper()}",
                    gpu_type=gpu_type,
                    simulated=True,
                )
            )
            index += 1
    return devices

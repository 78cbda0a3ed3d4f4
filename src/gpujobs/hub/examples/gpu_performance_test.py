"""GPU performance test: matrix-multiply throughput (TFLOP/s) on every GPU this job can see.

Run as a gpujobs job (``gpujobs submit gpu_performance_test.py --gpus 1``) it sees exactly the GPUs it
was given.  On a machine without a visible GPU it measures the CPU instead and says so clearly.

    python gpu_performance_test.py --size 4096 --iterations 20 --dtype bf16
"""

from __future__ import annotations

import argparse
import os
import time

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def measure(device: torch.device, size: int, iterations: int, dtype: torch.dtype) -> float:
    """TFLOP/s of ``size``x``size`` matmuls on ``device`` (2·n³ operations each)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernels chosen, clocks up
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return 2 * size**3 * iterations / elapsed / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    options = parser.parse_args()
    print(
        f"job {os.environ.get('GPUJOBS_JOB_ID', '(not a gpujobs job)')}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')!r}"
    )
    if os.environ.get("GPUJOBS_SIMULATED_GPUS"):
        simulated = os.environ["GPUJOBS_SIMULATED_GPUS"]
        print(f"note: simulated GPUs {simulated} were assigned; CUDA sees none of them")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            device = torch.device("cuda", index)
            name = torch.cuda.get_device_name(index)
            tflops = measure(device, options.size, options.iterations, DTYPES[options.dtype])
            print(f"GPU {index} ({name}): {tflops:.1f} TFLOP/s ({options.dtype}, n={options.size})")
    else:
        size = min(options.size, 1024)  # keep the CPU run short
        dtype = torch.float32  # CPUs rarely have fast bf16 matmul
        tflops = measure(torch.device("cpu"), size, max(2, options.iterations // 4), dtype)
        print(f"CPU ONLY (no GPU visible): {tflops * 1000:.1f} GFLOP/s (fp32, n={size}) - not a GPU figure")
    print("done")


if __name__ == "__main__":
    main()

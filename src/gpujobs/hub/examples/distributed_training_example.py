"""Data-parallel training with PyTorch DDP, one process per GPU the job was given (NCCL), or
``--processes`` CPU processes (gloo) when it has none.

    gpujobs submit distributed_training_example.py --gpus 2 --follow
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def worker(rank: int, world_size: int, store_port: int, steps: int, use_cuda: bool) -> None:
    backend = "nccl" if use_cuda else "gloo"
    store = dist.TCPStore("127.0.0.1", store_port, is_master=False)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # same initial weights everywhere; DDP also broadcasts them
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)).to(device),
        device_ids=[rank] if use_cuda else None,
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(rank)  # each rank sees different data
    target_weights = torch.linspace(-1, 1, 32)
    for step in range(1, steps + 1):
        inputs = torch.randn(128, 32, generator=generator)
        targets = (inputs @ target_weights).unsqueeze(1)
        loss = nn.functional.mse_loss(model(inputs.to(device)), targets.to(device))
        optimiser.zero_grad()
        loss.backward()  # gradients are all-reduced across ranks here
        optimiser.step()
        if rank == 0 and (step == 1 or step % max(1, steps // 4) == 0):
            print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)
    # Every rank must hold the same weights after training: check with an all-reduce.
    checksum = torch.tensor([sum(p.sum().item() for p in model.parameters())], device=device)
    gathered = checksum.clone()
    dist.all_reduce(gathered, op=dist.ReduceOp.SUM)
    in_sync = abs(gathered.item() / world_size - checksum.item()) < 1e-4
    print(f"rank {rank}/{world_size} on {device}: weights in sync = {in_sync}", flush=True)
    dist.barrier()  # no rank tears down its connections while another still uses them
    dist.destroy_process_group()
    if not in_sync:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="CPU processes when no GPU is visible")
    parser.add_argument("--steps", type=int, default=40)
    options = parser.parse_args()
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    world_size = torch.cuda.device_count() if use_cuda else options.processes
    print(f"DDP with {world_size} process(es), backend {'nccl' if use_cuda else 'gloo'}", flush=True)
    # The rendezvous store lives in this process, so it outlasts every worker: a rank that finishes
    # first cannot take it away from one still shutting down (a rank hosting it could, and the other
    # then aborted).  Port 0: the system picks a free one, with no window for another program to take it.
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    mp.spawn(worker, args=(world_size, store.port, options.steps, use_cuda), nprocs=world_size, join=True)
    print("distributed training finished")


if __name__ == "__main__":
    main()

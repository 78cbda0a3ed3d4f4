"""Train a small CNN for a few steps on data generated here (no downloads): bright squares vs. bright
crosses in noisy 28x28 images.  Uses the GPU when the job has one, else the CPU.

    python ml_training_example.py --steps 200 --batch-size 64 --output ~/cnn.pt
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


def make_batch(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a square (label 0) or a cross (label 1) at a random place, plus noise."""
    images = torch.randn(batch_size, 1, 28, 28, generator=generator) * 0.3
    labels = torch.randint(0, 2, (batch_size,), generator=generator)
    corners = torch.randint(2, 18, (batch_size, 2), generator=generator)
    for i in range(batch_size):
        row, col = corners[i].tolist()
        if labels[i] == 0:
            images[i, 0, row : row + 8, col : col + 8] += 1.0
        else:
            images[i, 0, row + 3 : row + 5, col : col + 8] += 1.0
            images[i, 0, row : row + 8, col + 3 : col + 5] += 1.0
    return images, labels


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--output", default=None, help="save the trained weights here")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"training on {device} (job {os.environ.get('GPUJOBS_JOB_ID', '-')})")
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    model = SmallCNN().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for step in range(1, options.steps + 1):
        images, labels = make_batch(options.batch_size, generator)
        images, labels = images.to(device), labels.to(device)
        loss = loss_fn(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % max(1, options.steps // 5) == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        images, labels = make_batch(512, generator)
        accuracy = (model(images.to(device)).argmax(1).cpu() == labels).float().mean().item()
    elapsed = time.perf_counter() - started
    print(f"held-out accuracy {accuracy:.3f} after {options.steps} steps in {elapsed:.1f} s")
    if options.output:
        path = os.path.expanduser(options.output)
        torch.save(model.state_dict(), path)
        print(f"saved weights to {path}")


if __name__ == "__main__":
    main()

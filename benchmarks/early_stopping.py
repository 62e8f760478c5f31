"""Cost of one NP check next to one training epoch, on the paper's [650, 650] MNIST MLP.

Training time depends on shapes, not values, so the epoch runs on random data of MNIST's size (60,000 x 784,
batch 32, Adam), as the paper trained; the NP check measures the model as it stands. Prints both times and the
ratio NP / epoch.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

import neural_persistence as npers


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 650), nn.ReLU(), nn.Linear(650, 650), nn.ReLU(), nn.Linear(650, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    x, y = torch.rand(60_000, 784), torch.randint(0, 10, (60_000,))
    t0 = time.perf_counter()
    for i in range(0, len(x), 32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        optimizer.step()
    epoch = time.perf_counter() - t0
    stopper = npers.EarlyStopping(patience=5)
    stopper.step(model)  # compile
    checks = []
    for _ in range(7):
        t0 = time.perf_counter()
        stopper.step(model)
        checks.append(time.perf_counter() - t0)
    check = statistics.median(checks)
    print(f"one epoch (60,000 samples, batch 32): {epoch:.2f} s")
    print(f"one NP check (compute + rule):        {check * 1e3:.1f} ms")
    print(f"ratio NP check / epoch:               {check / epoch:.5f}")


if __name__ == "__main__":
    main()

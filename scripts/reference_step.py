"""Time a fixed small workload: how fast this machine is right now.

A machine's speed drifts (other jobs, clock boosts, a different day), so a wall
time means little on its own. This times 10 training steps of a fixed small
convolutional network (batch 32, 28x28 images: the kind of work the diffusion
chapters do) with torch's default threads, after 3 warm-up steps, and prints
the median seconds per step over 5 repeats. A run's wall time divided by this
figure, measured on the same quiet machine within the same hour, is its cost in
reference steps: on the same processor, steadier from day to day than seconds,
and best for chapters whose work is convolutional too. It does not carry to
another processor: one that runs convolutions and other work at other relative
speeds moves the chapters unequally (on an AMD EPYC with AVX-512, 01's fully connected
network cost about twice the reference steps of README's machine, 03 about the
same). Across processors, compare wall times.

    python scripts/reference_step.py
"""
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def reference_step_seconds(repeats: int = 5, steps: int = 10) -> float:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(32, 1, 3, padding=1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(32, 1, 28, 28)

    def step():
        loss = F.mse_loss(net(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs)


if __name__ == "__main__":
    print(f"{reference_step_seconds():.5f}")

"""Seed case 1: a 1-3-1 leaky-ReLU regression "outputs huge numbers" unless lr is 1e-10.

The forum's set-up in PyTorch: integers in [0, 100) as inputs, y = x + 1 as targets, weights
and biases drawn from U[0, 1) (`nn.init.uniform_`), and the squared error summed over the
batch. Every weight is positive and the inputs reach 99, so each step multiplies the weights:
gradients explode and inf/NaN follow within a few steps. nnprobe names the explosion, the
all-positive init and the unnormalized inputs. The fix: standardize x and y, zero-centred init
(PyTorch's default), a mean loss.

    python examples/torch/relu_regression.py runs/torch-relu-regression
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from nnprobe.torch import Probe

try:
    from _data import integers
except ImportError:
    from ._data import integers


def main(out: str, steps: int = 50, every: int = 1):
    torch.manual_seed(0)
    x, y = integers(100)
    model = nn.Sequential(nn.Linear(1, 3), nn.LeakyReLU(0.01), nn.Linear(3, 1))
    for p in model.parameters():
        nn.init.uniform_(p, 0.0, 1.0)  # np.random.rand, as the forum's code has it
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    with Probe(model, out, every=every, loss="mse") as probe:
        for _ in range(steps):
            with probe.step() as s:
                pred = model(x)
                loss = ((pred - y) ** 2).sum()
                s.loss(loss, outputs=pred, targets=y)
                optimizer.zero_grad()
                loss.backward()
                s.before_update(optimizer)
                optimizer.step()
            if probe.stopped:
                break
    return probe.result


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "runs/torch-relu-regression")
    print(result.status, [(f.code, f.step, f.layer) for f in result.findings])

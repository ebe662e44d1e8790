"""Seed case 3: switching the hidden layer from sigmoid to ReLU drops the accuracy (too large a step).

A ReLU classifier trained with plain SGD at a learning rate that was fine for sigmoid: the first
large updates push most hidden units to z <= 0 for every example, where they output 0 and get no
gradient ever again. nnprobe reports the dead units and the update ratio far above ~1e-3. The
fix: a lower lr (or Adam), He init.

    python examples/torch/relu_accuracy.py runs/torch-relu-accuracy
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from nnprobe.torch import Probe

try:
    from _data import spirals
except ImportError:
    from ._data import spirals


def main(out: str, steps: int = 150, every: int = 5):
    torch.manual_seed(0)
    x, labels = spirals(n=300, n_classes=3)
    model = nn.Sequential(nn.Linear(2, 20), nn.ReLU(), nn.Linear(20, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    criterion = nn.CrossEntropyLoss()
    with Probe(model, out, every=every, loss="cross_entropy") as probe:
        for _ in range(steps):
            with probe.step() as s:
                logits = model(x)
                loss = criterion(logits, labels)
                s.loss(loss, outputs=logits, targets=labels)
                optimizer.zero_grad()
                loss.backward()
                s.before_update(optimizer)
                optimizer.step()
            if probe.stopped:
                break
    return probe.result


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "runs/torch-relu-accuracy")
    print(result.status, [(f.code, f.step, f.layer) for f in result.findings])

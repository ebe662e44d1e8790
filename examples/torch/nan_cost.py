"""Seed case 2: cross-entropy falls nicely, then turns into NaN (and a lower lr only delays it).

Written the way the forum's code is: a sigmoid output and the binary cross-entropy typed out by
hand in float32. Once a logit passes ~17 the sigmoid rounds to exactly 1.0, log(1 - p) is -inf
and 0 * -inf is NaN. nnprobe names the loss as the NaN's origin and the probabilities at exactly
0 or 1 (log-zero). The fix: `nn.BCEWithLogitsLoss` on the logits.

    python examples/torch/nan_cost.py runs/torch-nan-cost     # SGD with momentum: NaN at step 17
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from nnprobe.torch import Probe

try:
    from _data import blobs
except ImportError:  # imported as examples.torch.nan_cost
    from ._data import blobs


def main(out: str, steps: int = 400, every: int = 10):
    torch.manual_seed(0)
    x, labels = blobs(n=200, n_classes=2, separation=8.0)
    y = labels.to(torch.float32).unsqueeze(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with Probe(model, out, every=every, loss="bce") as probe:
        for _ in range(steps):
            with probe.step() as s:
                p = model(x)
                loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
                s.loss(loss, outputs=p, targets=y)
                optimizer.zero_grad()
                loss.backward()
                s.before_update(optimizer)
                optimizer.step()
            if probe.stopped:
                break
    return probe.result


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "runs/torch-nan-cost")
    print(result.status, [(f.code, f.step, f.layer) for f in result.findings])

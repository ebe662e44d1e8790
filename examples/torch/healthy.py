"""A healthy PyTorch classifier, instrumented the same way: nnprobe reports nothing above info.

Standardized inputs, PyTorch's default (zero-centred, fan-in scaled) init, logits into
`nn.CrossEntropyLoss`, Adam at its usual learning rate, mini-batches.

    python examples/torch/healthy.py runs/torch-healthy
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from nnprobe.torch import Probe

try:
    from _data import blobs
except ImportError:
    from ._data import blobs


def main(out: str, epochs: int = 20, every: int = 10):
    torch.manual_seed(0)
    x, labels = blobs(n=512, n_classes=3, separation=3.0)
    x = (x - x.mean(0)) / x.std(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    with Probe(model, out, every=every, loss="cross_entropy") as probe:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(64):
                with probe.step() as s:
                    logits = model(x[idx])
                    loss = criterion(logits, labels[idx])
                    s.loss(loss, outputs=logits, targets=labels[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    s.before_update(optimizer)
                    optimizer.step()
            if probe.stopped:
                break
    return probe.result


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "runs/torch-healthy")
    print(result.status, [(f.code, f.step, f.layer) for f in result.findings])

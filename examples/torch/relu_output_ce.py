"""Seed case 4: cross-entropy on a ReLU output ("undefined", the forum asked why).

The last layer keeps its ReLU and the cross-entropy is typed out as `-(y * out.log()).sum()`.
A ReLU output is 0 for about half the entries: log(0) = -inf and 0 * -inf = NaN on the very
first step. nnprobe reports the output/loss mismatch before training (static) and the
probabilities at exactly 0 fed to the log. The fix: logits into `nn.CrossEntropyLoss`.

    python examples/torch/relu_output_ce.py runs/torch-relu-output-ce
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


def main(out: str, steps: int = 100, every: int = 10):
    torch.manual_seed(0)
    x, labels = blobs(n=150, n_classes=3)
    y = nn.functional.one_hot(labels, 3).to(torch.float32)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, out, every=every, loss="cross_entropy") as probe:
        for _ in range(steps):
            with probe.step() as s:
                out_ = model(x)
                loss = -(y * out_.log()).sum() / len(x)
                s.loss(loss, outputs=out_, targets=labels)
                optimizer.zero_grad()
                loss.backward()
                s.before_update(optimizer)
                optimizer.step()
            if probe.stopped:
                break
    return probe.result


if __name__ == "__main__":
    result = main(sys.argv[1] if len(sys.argv) > 1 else "runs/torch-relu-output-ce")
    print(result.status, [(f.code, f.step, f.layer) for f in result.findings])

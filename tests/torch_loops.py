"""The PyTorch loop the probe tests run, how they read its log, and the modules that break it on purpose
(shared by test_torch_probe.py and test_torch_host.py; imported only where torch is installed)."""

from __future__ import annotations

import torch
from torch import nn

from nnprobe.torch import Probe
from nnprobe.train.runlog import LogContents, iter_records


def records(run_dir):
    """The whole log in order: start, steps, end (when written)."""
    contents = LogContents()
    steps = list(iter_records(run_dir / "steps.jsonl", contents))
    return [contents.start] + steps + ([contents.end] if contents.end else [])


def steps_of(run_dir):
    return [r for r in records(run_dir) if r["type"] == "step"]


def data(n=32, features=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def train(model, out, *, steps=4, every=1, lr=0.1, loss_fn=None, x=None, y=None, before_update=True,
          probe_kwargs=None, optimizer=None):
    """The issue's loop; returns the probe (closed)."""
    if x is None:
        x, y = data()
    loss_fn = loss_fn or (lambda out_, y_: nn.functional.cross_entropy(out_, y_))
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    kwargs = {"loss": "cross_entropy", **(probe_kwargs or {})}
    with Probe(model, out, every=every, **kwargs) as probe:
        for _ in range(steps):
            with probe.step() as s:
                out_ = model(x)
                loss = loss_fn(out_, y)
                s.loss(loss, outputs=out_, targets=y)
                opt.zero_grad()
                loss.backward()
                if before_update:
                    s.before_update(opt)
                opt.step()
            if probe.stopped:
                break
    return probe


class BadAt(nn.Module):
    """A leaf module whose output turns non-finite (log of a negative number) where its input is finite."""

    def forward(self, x):
        return torch.log(x - 10.0)


class NaNGrad(torch.autograd.Function):
    """The identity forward, NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class BadBackward(nn.Module):
    """A leaf module whose backward makes NaN from a finite gradient."""

    def forward(self, x):
        return NaNGrad.apply(x)

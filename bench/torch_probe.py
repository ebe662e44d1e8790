"""What nnprobe.torch.Probe costs a PyTorch CPU loop, next to torch.autograd.detect_anomaly.

The same loop (forward, loss, zero_grad, backward, SGD step) on the same model and batch, run
bare, under the probe at every=10 and every=1, under detect_anomaly, and as the "floor": the
every-step work the issue asks for, written by hand without nnprobe (Floor below), which shows
how much of the probe's cost is the required non-finite check itself and how much is nnprobe;
the "full floor" is the same for a full record on every step (the statistics' reads, every=1).
The variants take turns in rounds so that a busy machine slows them alike, and each is reported
as the median step time over the rounds and its ratio to the bare loop. The 1-3-1 network's row
gives the per-step overhead in microseconds (its steps are too small for a ratio to mean much).

    python -m bench.torch_probe [--quick] [--rounds N] [--steps N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from nnprobe.probes import kernel, statistics as probe_stats  # noqa: E402
from nnprobe.torch import Probe  # noqa: E402

TARGETS = {"every=10": 1.03, "every=1": 1.25}


def _network(widths: list[int], activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Loop:
    """One model, batch and optimizer; `run(n, probe)` takes n steps, with or without a probe."""

    def __init__(self, widths: list[int], batch: int, classification: bool) -> None:
        torch.manual_seed(0)
        self.model = _network(widths, nn.ReLU if classification else lambda: nn.LeakyReLU(0.01))
        self.x = torch.randn(batch, widths[0])
        if classification:
            self.y = torch.randint(0, widths[-1], (batch,))
            self.loss_fn = nn.CrossEntropyLoss()
        else:
            self.y = torch.randn(batch, widths[-1])
            self.loss_fn = nn.MSELoss()
        self.kind = "cross_entropy" if classification else "mse"
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)

    def bare(self, n: int) -> None:
        model, x, y, opt, loss_fn = self.model, self.x, self.y, self.opt, self.loss_fn
        for _ in range(n):
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def probed(self, n: int, probe: Probe) -> None:
        model, x, y, opt, loss_fn = self.model, self.x, self.y, self.opt, self.loss_fn
        for _ in range(n):
            with probe.step() as s:
                out = model(x)
                loss = loss_fn(out, y)
                s.loss(loss, outputs=out, targets=y)
                opt.zero_grad()
                loss.backward()
                s.before_update(opt)
                opt.step()


class Floor:
    """The every-step work the issue requires, by hand: no nnprobe, no records, no Python to spare.

    A forward hook on every leaf module keeps its output and checks it for NaN/inf (a sum of squares
    on its NumPy view) unless it is an activation whose input was the layer output just checked; a
    tensor hook on each layer output and activation output keeps its gradient (what names a
    backward origin); after backward, one sum of squares per parameter gradient (the global norm);
    after the update, one per parameter; the loss to the host once.

    `full=True` is the floor of a full record on every step (every=1): the same hooks, but each
    output's statistics (one pass of nnprobe's kernel over it; none for a ReLU's output, which
    follows from its input's) instead of its sum of squares, each gradient's statistics, and one
    pass over each weight and its copy after the update (the update's size, and the copy the next
    update is measured against; the probe also reads W once before the update to confirm it).
    """

    def __init__(self, model: nn.Module, full: bool = False) -> None:
        self.params = list(model.parameters())
        self.weights = [p for p in self.params if p.dim() >= 2]
        self.copies = [np.empty(tuple(w.shape), dtype=np.float32) for w in self.weights]
        self.full = full
        self.copied = False
        self.outs: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.sums: list[float] = []
        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        self.handles = [m.register_forward_hook(self._layer if hasattr(m, "weight") else self._activation)
                        for m in leaves]

    def _layer(self, module, inputs, out) -> None:
        self.outs.append(out)
        z = out.detach().numpy()
        if self.full:
            probe_stats.preactivation_stats(z, None)
        else:
            f = z.reshape(-1)
            self.sums.append(float(np.dot(f, f)))
        out.register_hook(self.grads.append)

    def _activation(self, module, inputs, out) -> None:
        self.outs.append(out)
        if self.full and not isinstance(module, nn.ReLU):  # a ReLU's a follows from z's pass
            probe_stats.activation_stats(out.detach().numpy(), 0)
        out.register_hook(self.grads.append)

    def run(self, loop: "Loop", n: int) -> None:
        model, x, y, opt, loss_fn = loop.model, loop.x, loop.y, loop.opt, loop.loss_fn
        dot = np.dot
        for _ in range(n):
            self.outs.clear()
            self.grads.clear()
            self.sums.clear()
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            gsq = 0.0
            for p in self.params:
                g = p.grad.numpy()
                if self.full:
                    gsq += probe_stats.gradient_stats(g, g.ndim > 1)["norm"] ** 2
                else:
                    g = g.reshape(-1)
                    gsq += float(dot(g, g))
            if self.full and not self.copied:  # later steps measure against the copy the last update's pass left
                for w, copy in zip(self.weights, self.copies):
                    _copy_sumsq(w.detach().numpy(), copy)
                self.copied = True
            opt.step()
            for p in self.params:
                if self.full and p.dim() >= 2:
                    continue  # the update's read below gives ||W_after|| too
                w = p.detach().numpy().reshape(-1)
                self.sums.append(float(dot(w, w)))
            if self.full:
                for w, copy in zip(self.weights, self.copies):
                    self.sums.append(_diff_copy(w.detach().numpy(), copy))
            finite = math.isfinite(loss.item()) and math.isfinite(gsq) and math.isfinite(sum(self.sums))
            if not finite:
                raise FloatingPointError("the floor's loop went non-finite")

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _copy_sumsq(w: np.ndarray, copy: np.ndarray) -> float:
    if kernel.active is not None:
        return kernel.active.copy_sumsq(w, copy)
    np.copyto(copy, w)
    return float(np.dot(w.reshape(-1), w.reshape(-1)))


def _diff_copy(w: np.ndarray, copy: np.ndarray) -> float:
    """||W_after - W_before||^2 is the update's; returns ||W_after||^2; the copy becomes W_after."""
    if kernel.active is not None:
        return kernel.active.diff_copy(w, copy)[1]
    d = (w - copy).reshape(-1)
    float(np.dot(d, d))
    np.copyto(copy, w)
    return float(np.dot(w.reshape(-1), w.reshape(-1)))


def _timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n


def measure(widths: list[int], batch: int, classification: bool, rounds: int, steps: int, workdir: Path) -> dict:
    loop = Loop(widths, batch, classification)
    loop.bare(5)  # warm-up: allocator, thread pool
    probes = {every: Probe(loop.model, workdir / f"{'-'.join(map(str, widths))}-every{every}", every=every,
                           loss=loop.kind, stop_on=()) for every in (10, 1)}
    times: dict[str, list[float]] = {"bare": [], "floor": [], "full floor": [], "every=10": [], "every=1": [],
                                     "detect_anomaly": []}
    try:
        for _ in range(rounds):
            times["bare"].append(_timed(loop.bare, steps))
            for key, full in (("floor", False), ("full floor", True)):
                floor = Floor(loop.model, full)
                times[key].append(_timed(lambda n, f=floor: f.run(loop, n), steps))
                floor.close()
            for every, probe in probes.items():
                times[f"every={every}"].append(_timed(lambda n, p=probe: loop.probed(n, p), steps))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Anomaly Detection has been enabled"
                with torch.autograd.detect_anomaly(check_nan=True):
                    times["detect_anomaly"].append(_timed(loop.bare, steps))
    finally:
        for probe in probes.values():
            probe.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"network": "-".join(map(str, widths)), "batch": batch, "steps_per_round": steps, "rounds": rounds,
            "us": {k: round(v * 1e6, 1) for k, v in median.items()},
            "ratio": {k: round(v / median["bare"], 3) for k, v in median.items() if k != "bare"},
            "overhead_us": {k: round((v - median["bare"]) * 1e6, 1) for k, v in median.items() if k != "bare"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (a smoke run, noisy)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    steps = args.steps or (20 if args.quick else 60)
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"median of {rounds} interleaved rounds of {steps} steps", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure([784, 256, 256, 256, 10], 256, True, rounds, steps, Path(tmp)),
                measure([1, 3, 1], 100, False, rounds, steps * 10, Path(tmp))]
    print(f"{'network':<20}{'bare us':>10}{'floor':>10}{'full fl.':>10}{'every=10':>10}{'every=1':>10}{'anomaly':>10}"
          f"{'+us floor':>10}{'+us e=10':>10}{'+us e=1':>10}")
    for r in rows:
        ratio, over = r["ratio"], r["overhead_us"]
        print(f"{r['network']:<20}{r['us']['bare']:>10.1f}{ratio['floor']:>10.3f}{ratio['full floor']:>10.3f}"
              f"{ratio['every=10']:>10.3f}{ratio['every=1']:>10.3f}{ratio['detect_anomaly']:>10.3f}"
              f"{over['floor']:>10.1f}{over['every=10']:>10.1f}{over['every=1']:>10.1f}")
    big = rows[0]["ratio"]
    floors = {"every=10": "floor", "every=1": "full floor"}
    for key, target in TARGETS.items():
        verdict = "ok" if big[key] <= target else "ABOVE TARGET"
        print(f"784-256x3-10 {key}: {big[key]:.3f}x (target <= {target}) {verdict}; "
              f"its floor ({floors[key]}): {big[floors[key]]:.3f}x")


if __name__ == "__main__":
    main()

"""nnprobe.Recorder's cost on a hand-written NumPy loop: the same loop with and without it, side by side.

    python -m bench.recorder [--rounds N]

Two networks: the forum's 1-3-1 leaky-ReLU regression (100 examples, float64, full batch) and a
784-256x3-10 ReLU/softmax classifier (batch 256, float32). The loop is the one people write
(forward, textbook loss, backward, in-place SGD); the recorded variant adds rec.step(), s.layer,
s.loss and s.grads for every layer at every step (every=1: every record full). The two variants
run in alternating blocks; each block's first steps are dropped, the ratio is taken per round and
its median printed, with the 1-3-1 overhead per step in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nnprobe

DROP = 3


@dataclass(frozen=True)
class Case:
    name: str
    widths: tuple[int, ...]
    batch: int
    dtype: type
    block: int
    hidden: str  # activation of the hidden layers
    target: float  # the ratio the issue asks for (None: report only)


CASES = [
    Case("1-3-1 (forum), float64, batch 100", (1, 3, 1), 100, np.float64, 400, "leaky_relu", float("nan")),
    Case("784-256x3-10, float32, batch 256", (784, 256, 256, 256, 10), 256, np.float32, 12, "relu", 1.10),
]


class Loop:
    """A hand-written MLP step: forward, loss, backward, SGD in place; optionally recorded."""

    def __init__(self, case: Case, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        dt = case.dtype
        w = case.widths
        self.X = rng.standard_normal((case.batch, w[0])).astype(dt)
        if w[-1] == 1:
            self.T = (self.X[:, :1] * 0.5 + 0.1).astype(dt)
            self.classify = False
        else:
            self.T = np.eye(w[-1], dtype=dt)[rng.integers(0, w[-1], case.batch)]
            self.classify = True
        self.Ws = [(rng.standard_normal((i, o)) * np.sqrt(2 / i)).astype(dt) for i, o in zip(w, w[1:])]
        self.bs = [np.zeros(o, dtype=dt) for o in w[1:]]
        self.slope = dt(0.01 if case.hidden == "leaky_relu" else 0.0)
        self.hidden = case.hidden
        self.lr = dt(1e-3)

    def step(self, s=None) -> None:
        zs, acts = [], [self.X]
        last = len(self.Ws) - 1
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            z = acts[-1] @ W + b
            if i < last:
                a = np.where(z > 0, z, self.slope * z)
                act = self.hidden
            elif self.classify:
                e = np.exp(z - z.max(axis=1, keepdims=True))
                a = e / e.sum(axis=1, keepdims=True)
                act = "softmax"
            else:
                a, act = z, "identity"
            if s is not None:
                s.layer(f"dense{i + 1}", z=z, a=a, W=W, b=b, activation=act)
            zs.append(z)
            acts.append(a)
        out, n = acts[-1], self.X.shape[0]
        if self.classify:
            loss = -np.sum(self.T * np.log(out)) / n
        else:
            loss = np.sum((out - self.T) ** 2) / n
        if s is not None:
            s.loss(loss, outputs=out, targets=self.T)
        delta = (out - self.T) / n * (1 if self.classify else 2)
        for i in range(last, -1, -1):
            gW, gb = acts[i].T @ delta, delta.sum(axis=0)
            if i > 0:
                delta = (delta @ self.Ws[i].T) * np.where(zs[i - 1] > 0, 1, self.slope).astype(delta.dtype)
            if s is not None:
                s.grads(f"dense{i + 1}", gW=gW, gb=gb)
            self.Ws[i] -= self.lr * gW
            self.bs[i] -= self.lr * gb


def _block(loop: Loop, steps: int, rec=None) -> float:
    """Mean seconds per step over `steps`, after DROP untimed ones."""
    for i in range(DROP + steps):
        if i == DROP:
            t0 = time.perf_counter()
        if rec is None:
            loop.step()
        else:
            with rec.step() as s:
                loop.step(s)
    return (time.perf_counter() - t0) / steps


def measure(case: Case, rounds: int) -> dict:
    plain_loop, recorded_loop = Loop(case), Loop(case)
    ratios, plain_t, rec_t = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        loss = "cross_entropy" if plain_loop.classify else "mse"
        with nnprobe.Recorder(Path(tmp) / "run", loss=loss, stop_on=()) as rec:
            for _ in range(rounds):
                time.sleep(0.05)
                p = _block(plain_loop, case.block)
                time.sleep(0.05)
                r = _block(recorded_loop, case.block, rec)
                plain_t.append(p)
                rec_t.append(r)
                ratios.append(r / p)
    return {"case": case.name, "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "plain_us": 1e6 * statistics.median(plain_t),
            "recorded_us": 1e6 * statistics.median(rec_t),
            "overhead_us": 1e6 * statistics.median(r - p for r, p in zip(rec_t, plain_t)), "target": case.target}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"{'network':38} {'plain':>10} {'recorded':>10} {'overhead':>10} {'ratio (median, min-max)':>26}")
    for case in CASES:
        m = measure(case, args.rounds)
        target = f"  target <= {m['target']:.2f}" if m["target"] == m["target"] else ""
        print(f"{m['case']:38} {m['plain_us']:8.1f}us {m['recorded_us']:8.1f}us {m['overhead_us']:8.1f}us "
              f"   {m['ratio']:.3f} ({m['ratio_min']:.3f}-{m['ratio_max']:.3f}){target}")


if __name__ == "__main__":
    main()

"""nnprobe.Recorder's cost on a hand-written NumPy loop: the same loop with and without it, side by side.

    python -m bench.recorder [--scale X]

Two networks: the forum's 1-3-1 leaky-ReLU regression (100 examples, float64, full batch) and a
784-256x3-10 ReLU/softmax classifier (batch 256, float32). The loop is the one people write
(forward, textbook loss, backward, in-place SGD); the recorded variant adds rec.step(), s.layer,
s.loss and s.grads for every layer at every step (every=1: every record full). The two variants
take steps in turn, one each, so a busy machine's bursts fall on both alike. Printed: the median
plain and recorded step, the median time spent in the recorder itself (its calls, and entering and
leaving the step block, where the record is made, written and observed), the ratio of the wall
times, and plain + in-recorder over plain: the second does not carry the noise of two separate
timings of the loop's own arithmetic, which dominates on a busy machine. A third loop is recorded
with every=10 (a full record every tenth step, the every-step checks in between), as a wall ratio.

A fourth variant, the floor, takes its steps in the same turns: the least that any recorder writing
the same record must read, hand-written with nnprobe's kernel (NumPy where it does not run) and
nothing else: one pass over each z and a when they are handed over (their statistics; their
fingerprints counted as free), one over each weight gradient, one more over each z and a when
the gradients are handed over (has the backward pass written into them?), and one over each
weight and its copy after the update (the update's size, and the copy the next update is measured
against). What the recorder costs above the floor is its own work (validation, the record, the
log, the live detectors); the floor is what the record itself costs on this machine.
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
from nnprobe.probes import kernel, statistics as stats
from nnprobe.probes.changes import Fingerprint

DROP = 3


@dataclass(frozen=True)
class Case:
    name: str
    widths: tuple[int, ...]
    batch: int
    dtype: type
    pairs: int  # plain and recorded steps timed in turn (after DROP untimed pairs)
    hidden: str  # activation of the hidden layers
    target: float  # the ratio the issue asks for (NaN: report only)


CASES = [
    Case("1-3-1 (forum), float64, batch 100", (1, 3, 1), 100, np.float64, 3000, "leaky_relu", float("nan")),
    Case("784-256x3-10, float32, batch 256", (784, 256, 256, 256, 10), 256, np.float32, 80, "relu", 1.10),
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


class _Timed:
    """Stands for the step handle in the loop and adds up the time spent inside its calls."""

    def __init__(self, s) -> None:
        self.s, self.inside = s, 0.0

    def _call(self, method, *args, **kwargs) -> None:
        t0 = time.perf_counter()
        method(*args, **kwargs)
        self.inside += time.perf_counter() - t0

    def layer(self, *args, **kwargs) -> None:
        self._call(self.s.layer, *args, **kwargs)

    def loss(self, *args, **kwargs) -> None:
        self._call(self.s.loss, *args, **kwargs)

    def grads(self, *args, **kwargs) -> None:
        self._call(self.s.grads, *args, **kwargs)


class Floor:
    """Stands for the step handle: only the reads a full record needs (module docstring)."""

    def __init__(self, loop: Loop) -> None:
        self.copies = [W.copy() for W in loop.Ws]
        self.layers: dict[str, tuple] = {}
        self.loop = loop

    def layer(self, name, z=None, a=None, W=None, b=None, activation=None) -> None:
        stats.forward_stats(z, a, "identity" if a is z else "other", None)
        stats.bias_stats(b)
        self.layers[name] = (z, a)

    def loss(self, value, outputs=None, targets=None) -> None:
        stats.probability_stats(outputs, 0.0, False)

    def grads(self, name, gW=None, gb=None) -> None:
        stats.gradient_stats(gW, True)
        stats.gradient_stats(gb, False)
        for x in self.layers[name]:
            Fingerprint.of(x)

    def end(self) -> None:
        for W, copy in zip(self.loop.Ws, self.copies):
            if _reads(W):
                kernel.active.diff_copy(W, copy)
            else:
                stats.sq_norm(W - copy)
                np.copyto(copy, W)
        self.layers = {}


def _reads(W: np.ndarray) -> bool:
    return kernel.active is not None and W.dtype == np.float32


def _floor(loop: Loop, floor: Floor) -> float:
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        loop.step(floor)
        floor.end()
    return time.perf_counter() - t0


def _plain(loop: Loop) -> float:
    t0 = time.perf_counter()
    loop.step()
    return time.perf_counter() - t0


def _recorded(loop: Loop, rec) -> tuple[float, float]:
    """(wall time of the recorded step, the part of it spent in the recorder: its calls, entering and
    leaving the step block, where the record is made, written and observed)."""
    t0 = time.perf_counter()
    with rec.step() as s:
        timed = _Timed(s)
        t1 = time.perf_counter()
        loop.step(timed)
        loop_own = time.perf_counter() - t1 - timed.inside
    total = time.perf_counter() - t0
    return total, total - loop_own


def measure(case: Case, pairs: int) -> dict:
    """Plain, recorded (every step, and every 10th in full) and floor steps taken in turn, one each, so that
    all meet the same load; medians of each."""
    plain_loop, recorded_loop, every10_loop, floor_loop = Loop(case), Loop(case), Loop(case), Loop(case)
    floor = Floor(floor_loop)
    times: dict[str, list[float]] = {"plain": [], "recorded": [], "inside": [], "every10": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        loss = "cross_entropy" if plain_loop.classify else "mse"
        with nnprobe.Recorder(Path(tmp) / "run", loss=loss, stop_on=()) as rec, \
                nnprobe.Recorder(Path(tmp) / "every10", loss=loss, stop_on=(), every=10) as rec10:
            for i in range(DROP + pairs):
                p = _plain(plain_loop)
                r, inside = _recorded(recorded_loop, rec)
                r10, _ = _recorded(every10_loop, rec10)
                f = _floor(floor_loop, floor)
                if i >= DROP:
                    for key, value in zip(times, (p, r, inside, r10, f)):
                        times[key].append(value)
    m = {key: statistics.median(v) for key, v in times.items()}
    plain = m["plain"]
    return {"case": case.name, "ratio": m["recorded"] / plain, "inside_ratio": 1 + m["inside"] / plain,
            "plain_us": 1e6 * plain, "recorded_us": 1e6 * m["recorded"], "inside_us": 1e6 * m["inside"],
            "target": case.target, "floor_us": 1e6 * m["floor"], "floor_ratio": m["floor"] / plain,
            "every10_ratio": m["every10"] / plain}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of step pairs")
    args = parser.parse_args(argv)
    print(f"{'network':36} {'plain':>11} {'floor':>11} {'recorded':>11} {'in recorder':>11}  floor ratio  "
          f"ratio (wall)  ratio (plain + in recorder)  every=10 ratio (wall)")
    for case in CASES:
        m = measure(case, max(8, int(case.pairs * args.scale)))
        target = f"  target <= {m['target']:.2f}" if m["target"] == m["target"] else ""
        print(f"{m['case']:36} {m['plain_us']:9.1f}us {m['floor_us']:9.1f}us {m['recorded_us']:9.1f}us "
              f"{m['inside_us']:9.1f}us  {m['floor_ratio']:11.3f}  {m['ratio']:11.3f}  {m['inside_ratio']:26.3f}  "
              f"{m['every10_ratio']:20.3f}{target}")

if __name__ == "__main__":
    main()

"""Step time with probes off and on, PyTorch on the same network, and the GEMM peak, side by side.

A step is timed through the code `nnprobe train` runs (`nnprobe.train.run.train`'s loop body):
`Trainer.step` (forward, loss, backward, probes, record building, update),
`LogWriter.write` to a temporary steps.jsonl (lines encoded and written in batches of
runlog.HOLD_RECORDS), and `RecordObservers.observe` (the stop_on detectors at once; the digest
and the other detectors in batches of observers.BATCH records).
Probes off (`probes.enabled: false`) and on (every step a full record), and PyTorch when it
is installed, run in alternating blocks after a short pause (SETTLE); each block's first steps
are dropped (they pay for the other variant's cache footprint), ratios are taken per round and
their median reported.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nnprobe.config import Config, validate_config
from nnprobe.data import load_dataset
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.observers import BATCH, RecordObservers
from nnprobe.train.runlog import LogWriter
from nnprobe.rngs import data_rng
from nnprobe.train.loop import Trainer
from nnprobe.limits import MAX_STEPS


@dataclass(frozen=True)
class Network:
    name: str
    n_in: int
    hidden: tuple[int, ...]
    n_out: int
    batch: int
    block: int  # timed steps per block (plus DROP untimed)
    rounds: int

    @property
    def widths(self) -> list[int]:
        return [self.n_in, *self.hidden, self.n_out]

    @property
    def flops(self) -> int:
        """GEMM flops of one step: forward x@W, backward x.T@dz for every layer and dz@W.T for all but the first."""
        w = self.widths
        macs = [w[i] * w[i + 1] for i in range(len(w) - 1)]
        return 2 * self.batch * (2 * sum(macs) + sum(macs[1:]))


DROP = 3  # untimed steps at the start of each block
# Pause before each block: thread pools (OpenBLAS's, PyTorch's OpenMP) spin for a while after their
# last job and would steal the next variant's cores; 0.1 s lets them go to sleep. The pause is a
# busy wait on this thread, so the core does not drop into an idle state (a sleep would).
SETTLE = 0.1


def _settle() -> None:
    end = time.perf_counter() + SETTLE
    while time.perf_counter() < end:
        pass

# Rounds: on a shared 2-core machine single rounds of the same ratio scatter by +-30 % (a neighbour's
# burst lands in one block and not the other); 15-21 rounds keep the median within a few percent.
# Blocks are whole multiples of BATCH, so that each timed block holds its full share of the batched
# digest and detector work (StepLoop.block).
NETWORKS = [
    Network("1-3-1", 1, (3,), 1, 100, block=10 * BATCH, rounds=15),
    Network("784-64x3-10", 784, (64, 64, 64), 10, 256, block=2 * BATCH, rounds=15),
    Network("784-256x3-10", 784, (256, 256, 256), 10, 256, block=BATCH, rounds=21),
    Network("784-1024x3-10", 784, (1024, 1024, 1024), 10, 256, block=BATCH, rounds=21),
]


def network_config(net: Network, probes: bool, steps: int = MAX_STEPS) -> Config:
    """float32; the 1-3-1 is the forum regression (fixed: standardized, He init); the others classify blobs.

    The training set is exactly one batch, so every step is a full-batch step and no gather
    (x[idx], the same with probes on or off and in PyTorch) is timed.
    """
    if net.n_in == 1:
        raw = {"name": f"bench-{net.name}", "seed": 0,
               "data": {"source": "affine", "n_samples": net.batch, "noise": 1.0,
                        "normalize": "standardize", "normalize_target": "standardize"},
               "model": {"hidden": list(net.hidden), "activation": "leaky_relu", "output": "identity",
                         "init": "he_normal", "bias_init": "zeros", "dtype": "float32"},
               "loss": {"kind": "mse", "reduction": "mean"},
               "optimizer": {"kind": "sgd", "lr": 0.01}}
    else:
        raw = {"name": f"bench-{net.name}", "seed": 0,
               "data": {"source": "blobs", "n_samples": net.batch, "n_features": net.n_in,
                        "n_classes": net.n_out, "separation": 1.0},
               "model": {"hidden": list(net.hidden), "activation": "relu", "output": "softmax",
                         "init": "he_normal", "bias_init": "zeros", "dtype": "float32"},
               "loss": {"kind": "cross_entropy", "from_logits": True},
               "optimizer": {"kind": "sgd", "lr": 0.001}}
    raw["training"] = {"steps": steps, "batch_size": net.batch}
    raw["probes"] = {"enabled": probes, "every": 1}
    return validate_config(raw, source="bench")


def time_each(one: Callable[[], None], n: int) -> list[float]:
    """Seconds taken by each of n calls."""
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        one()
        out.append(clock() - t0)
    return out


class StepLoop:
    """One run's objects and `nnprobe.train.run.train`'s per-step body, timed step by step."""

    def __init__(self, config: Config, workdir: Path) -> None:
        data = load_dataset(config.data, config.task, data_rng(config.seed))  # the data `train` would use
        self.trainer = Trainer(config, data)
        start = self.trainer.start_record()
        self.observers = RecordObservers(DetectorSuite(config, start), Digest(start), set(config.stop_on))
        self.writer = LogWriter(Path(tempfile.mkdtemp(dir=workdir)) / "steps.jsonl")
        self.writer.write(start)
        self.batches = self.trainer.batches()
        self.step_no = 0
        self.last_record: Optional[dict] = None

    def _step(self) -> None:
        """The loop body up to a full batch, which it leaves for the caller to flush (and time)."""
        record = self.trainer.step(self.step_no, next(self.batches))
        self.writer.write(record, flush=False)
        self.step_no += 1
        self.observers.observe(record, flush=False)  # train() stops on what this returns; the bench goes on
        self.last_record = record

    def one(self) -> None:
        self._step()
        self._flush_full()

    def _flush_full(self) -> None:
        """The batched work: the held log lines and the held records' digest and detectors."""
        if self.writer.full:
            self.writer.flush()
        if self.observers.full:
            self.observers.flush()

    def run(self, n: int) -> list[float]:
        return time_each(self.one, n)

    def block(self, n: int) -> float:
        """Seconds per step over n steps (a multiple of BATCH), after DROP untimed ones: the median
        step (robust to a neighbour's burst) plus the batched work (log lines, digest, detectors) spread
        over the block's steps (a plain median would leave it out, as it falls on one step in BATCH).

        The held-back records are flushed before the clock starts, so the block holds exactly
        n / BATCH batches.
        """
        for _ in range(DROP):
            self.one()
        self.writer.flush()
        self.observers.flush()
        clock, observers, writer = time.perf_counter, self.observers, self.writer
        steps, batches = [], 0.0
        for _ in range(n):
            t0 = clock()
            self._step()
            t1 = clock()
            steps.append(t1 - t0)
            if observers.full or writer.full:
                self._flush_full()
                batches += clock() - t1
        return statistics.median(steps) + batches / n

    def close(self) -> None:
        self.writer.close()


class TorchLoop:
    """The same network, loss, optimizer and batch in PyTorch (CPU, its default threads)."""

    def __init__(self, net: Network, trainer: Trainer) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(0)
        layers: list = []
        widths = net.widths
        for i in range(len(widths) - 1):
            layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(torch.nn.LeakyReLU(0.01) if net.n_in == 1 else torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.x = torch.from_numpy(np.ascontiguousarray(trainer.x, dtype=np.float32))
        if trainer.labels is not None:
            self.y = torch.from_numpy(np.asarray(trainer.labels, dtype=np.int64))
            self.loss = torch.nn.CrossEntropyLoss()
        else:
            self.y = torch.from_numpy(np.ascontiguousarray(trainer.t, dtype=np.float32))
            self.loss = torch.nn.MSELoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=trainer.config.optimizer.lr)

    def one(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        loss.item()  # the Python float nnprobe's record holds

    def block(self, n: int) -> float:
        """The median of n steps' times, after DROP untimed ones."""
        for _ in range(DROP):
            self.one()
        return statistics.median(time_each(self.one, n))


def torch_version() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def gemm_peak(quick: bool) -> dict:
    """float32 GEMM throughput of this machine's NumPy BLAS: the best median over a few square sizes."""
    best = 0.0
    per_size = {}
    rng = np.random.default_rng(0)
    for n in ((1024,) if quick else (1024, 2048)):
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        c = np.empty((n, n), dtype=np.float32)
        for _ in range(3):
            np.matmul(a, b, out=c)
        times = []
        for _ in range(5 if quick else 15):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
        gflops = 2 * n**3 / statistics.median(times) / 1e9
        per_size[n] = round(gflops, 1)
        best = max(best, gflops)
    return {"gflops": round(best, 1), "per_size": per_size}


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def measure_network(net: Network, quick: bool, with_torch: bool, workdir: Path,
                    log: Callable[[str], None] = lambda s: None) -> dict:
    """Alternating blocks of probes-off, probes-on (and PyTorch) steps; per-round ratios and their medians."""
    rounds = max(3, net.rounds // 2) if quick else net.rounds
    block = net.block  # a multiple of BATCH, quick or not
    off = StepLoop(network_config(net, probes=False), workdir)
    on = StepLoop(network_config(net, probes=True), workdir)
    variants: dict[str, Callable[[int], float]] = {"off": off.block, "on": on.block}
    torch_loop = None
    if with_torch:
        torch_loop = TorchLoop(net, off.trainer)
        variants["torch"] = torch_loop.block
    names = list(variants)
    with np.errstate(all="ignore"):
        for name in names:  # warm-up: first-touch allocations, BLAS buffers, caches
            variants[name](block)
    times: dict[str, list[float]] = {n: [] for n in names}
    ratio_on, ratio_torch = [], []
    with np.errstate(all="ignore"):
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            block_mean = {}
            for name in order:
                _settle()
                block_mean[name] = variants[name](block)
                times[name].append(block_mean[name])
            ratio_on.append(block_mean["on"] / block_mean["off"])
            if torch_loop is not None:
                ratio_torch.append(block_mean["off"] / block_mean["torch"])
            log(f"  {net.name} round {r + 1}/{rounds}: on/off {ratio_on[-1]:.3f}"
                + (f", numpy/torch {ratio_torch[-1]:.3f}" if ratio_torch else ""))
    for loop in (off, on):
        loop.close()
    last = on.last_record or {}
    healthy = last.get("nonfinite") is None and isinstance(last.get("loss"), float) and math.isfinite(last["loss"])
    off_s = _median(times["off"])
    result = {
        "network": net.name, "batch": net.batch, "dtype": "float32", "rounds": rounds, "steps_per_block": block,
        "off_us": round(off_s * 1e6, 1), "on_us": round(_median(times["on"]) * 1e6, 1),
        "on_off_ratio": round(_median(ratio_on), 4),
        "on_off_ratio_range": [round(min(ratio_on), 4), round(max(ratio_on), 4)],
        "probe_cost_us": round((_median(times["on"]) - off_s) * 1e6, 1),
        "gemm_gflop": net.flops / 1e9,
        "gflops": round(net.flops / off_s / 1e9, 2),
        "final_loss": last.get("loss"), "healthy": healthy,
        "torch_us": None, "numpy_torch_ratio": None,
    }
    if torch_loop is not None:
        result["torch_us"] = round(_median(times["torch"]) * 1e6, 1)
        result["numpy_torch_ratio"] = round(_median(ratio_torch), 4)
        result["numpy_torch_ratio_range"] = [round(min(ratio_torch), 4), round(max(ratio_torch), 4)]
    return result


def probe_breakdown(net: Network, workdir: Path, steps: int = 2 * BATCH) -> dict:
    """Where a probed step's extra time goes: the probes' own functions, the log line, the digest, the detectors.

    Measured by wrapping those functions with timers during a separate run (wrapping costs a
    little itself, so these are for attribution, not for the ratios above).
    """
    from nnprobe.probes import statistics as probes
    from nnprobe.train import runlog

    acc: dict[str, float] = {}

    def wrap(owner, attr: str, key: str):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)
        return owner, attr, original

    targets = [(probes, "forward_stats", "z/a statistics"), (probes, "weight_stats", "W statistics"),
               (probes, "bias_stats", "b statistics"), (probes, "weight_norm_stats", "W norms"),
               (probes, "gradient_stats_with_sq", "gW/gb statistics with their norms"),
               (probes, "gradient_stats", "gW/gb statistics (NumPy path)"),
               (probes, "sq_norm", "squared norms (NumPy path: every gradient)"),
               (runlog.LogWriter, "flush", "log lines (encoded and written in batches)"),
               (RecordObservers, "observe", "stop_on detectors (every record)"),
               (RecordObservers, "flush", "digest + other detectors (in batches)")]
    restore = []
    loop = None
    try:
        with np.errstate(all="ignore"):
            loop = StepLoop(network_config(net, probes=True), workdir)
            loop.run(5)
            for owner, attr, key in targets:
                restore.append(wrap(owner, attr, key))
            t0 = time.perf_counter()
            loop.run(steps)
            total = time.perf_counter() - t0
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)
        if loop is not None:
            loop.close()
    return {"network": net.name, "step_us": round(total / steps * 1e6, 1),
            "parts_us": {k: round(v / steps * 1e6, 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}}

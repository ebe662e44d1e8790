"""The loss curve's shape: a loss that wanders at the scale of epochs, and single steps far above the rest."""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from typing import Any, Optional

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    Persistence, RunFacts, clean, finite, fixes, fmt, layer_key, record_layers, stat, step_of,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.diagnose.windows import ExampleMeans, batch_of
from nnprobe.findings import Finding

#: steps taken as one epoch when the start record does not say how many examples there are
FALLBACK_EPOCH = 100
#: 1.4826 * MAD estimates the standard deviation of normally distributed values
MAD_TO_STD = 1.4826


def steps_per_epoch(start: dict) -> int:
    """Optimizer steps per pass over the training set (FALLBACK_EPOCH when the records do not say)."""
    n, batch = (start.get("data") or {}).get("n_train"), batch_of(start)
    if isinstance(n, int) and n > 0 and batch is not None:
        return max(1, math.ceil(n / batch))
    return FALLBACK_EPOCH


class _Epoch:
    """One epoch's step losses: their mean and their mean step-to-step change."""

    __slots__ = ("index", "total", "n", "jumps", "n_jumps", "prev")

    def __init__(self, index: int, prev: Optional[float]) -> None:
        self.index = index
        self.total = 0.0
        self.n = 0
        self.jumps = 0.0
        self.n_jumps = 0
        self.prev = prev

    @property
    def mean(self) -> float:
        return self.total / self.n


@register
class LossOscillation(Detector):
    code = "loss-oscillation"
    severity = "warning"
    summary = "The loss stopped improving at the scale of epochs while it keeps swinging from step to step."
    thresholds = {
        "window": Threshold(
            10,
            "epochs judged together: the mean loss of each epoch, over this many epochs (an epoch is one pass "
            "over the training set, and at least min_period steps)",
        ),
        "min_period": Threshold(
            10,
            "steps an epoch must span at least (full-batch or few-batch training: several passes make one): "
            "ten steps of Adam or momentum settling after an overshoot are a transient, not a loss that wanders",
        ),
        "min_improvement": Threshold(
            0.01,
            "the best epoch mean of the window's second half must beat the best epoch mean before it by this "
            "fraction (>=), or the loss has stopped improving; SageMaker Debugger's LossNotDecreasing uses 0.1% "
            "per step window, 1% is its analogue at the scale of epochs",
        ),
        "swing": Threshold(
            0.25,
            "mean change of the epoch mean from one epoch to the next, relative to the window's mean loss (>=): "
            "averaging over an epoch removes most of the sampling noise of small batches, and a quarter of the "
            "level every epoch is beyond what a constant learning rate's jitter around a minimum gives; "
            "AUTOTRAINER's unstable rule asks a 3% swing of the accuracy in 20% of the epochs",
        ),
        "variation": Threshold(
            0.2,
            "mean change of the loss from one step to the next, relative to the window's mean loss (>=)",
        ),
        "patience": Threshold(
            5, "consecutive epochs at whose end the window must oscillate: the loss wanders, it does not just bounce once"),
    }
    explanation = Explanation(
        meaning=(
            "Averaged over whole epochs the loss no longer improves, yet from step to step and from epoch to epoch "
            "it keeps swinging by a large part of its level: each update throws the weights across the valley "
            "instead of down it, so training wanders without settling. Averaging over an epoch cancels the noise "
            "of small batches: a healthy run near its noise floor has flat epoch means."
        ),
        causes=[
            "a learning rate too high for the batch size (batch size 1 with plain SGD or momentum)",
            "momentum that keeps the overshoot going",
            "units switching off and on between examples (see dead-relu) so that the network keeps changing shape",
        ],
        fixes=[
            "a lower optimizer.lr",
            "a larger training.batch_size",
            "a learning rate that decays over the epochs (a schedule in a loop of your own)",
        ],
        references=[
            "Zhang et al. 2021, AUTOTRAINER (ICSE): 'unstable' training, the accuracy swings between its local "
            "maxima and minima by zeta = 0.03 in eta = 20% of the epochs",
            "Goodfellow, Bengio & Courville 2016, Deep Learning §8.3.1: SGD needs a decreasing learning rate "
            "because the minibatch gradient noise does not vanish at a minimum",
        ],
        provenance=[
            "AUTOTRAINER 'unstable': kept: the symptom is judged per epoch and needs the swing to repeat. "
            "Changed: it watches the loss, not the accuracy (regression has none, and a loss is recorded at every "
            "step), and adds the condition that the epoch means stopped improving, so a loss that falls in "
            "steps is not called unstable",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        epoch = steps_per_epoch(context.start or {})
        self.epoch_steps = epoch * max(1, math.ceil(self.t["min_period"] / epoch))
        self.window = max(2, int(self.t["window"]))
        self.epochs: deque[tuple[int, float, float]] = deque(maxlen=self.window)  # (index, mean, jumps/step)
        self.best_before: Optional[float] = None  # the best epoch mean that left the window
        self.current: Optional[_Epoch] = None
        self.persist = Persistence(self.t["patience"])
        self.at_first: Optional[dict[str, Any]] = None
        self.worst: Optional[dict[str, Any]] = None
        self.last_epoch_end: Optional[int] = None
        self.stopped = False

    def observe(self, record: dict) -> None:
        if self.stopped:
            return
        loss = finite(record.get("loss"))
        if loss is None:
            if record.get("loss") is not None:
                self.stopped = True  # non-finite: the nonfinite finding tells that story
            return
        index = step_of(record) // self.epoch_steps
        epoch = self.current
        if epoch is None or index != epoch.index:
            if epoch is not None and epoch.n:
                self._close(epoch)
            epoch = self.current = _Epoch(index, epoch.prev if epoch is not None else None)
        prev = epoch.prev  # _Epoch.add, inlined: this runs for every record of the log
        if prev is not None:
            epoch.jumps += loss - prev if loss > prev else prev - loss
            epoch.n_jumps += 1
        epoch.prev = loss
        epoch.total += loss
        epoch.n += 1

    def _close(self, epoch: _Epoch) -> None:
        if len(self.epochs) == self.window:
            left = self.epochs[0][1]
            self.best_before = left if self.best_before is None else min(self.best_before, left)
        jitter = epoch.jumps / epoch.n_jumps if epoch.n_jumps else 0.0
        self.epochs.append((epoch.index, epoch.mean, jitter))
        self.last_epoch_end = (epoch.index + 1) * self.epoch_steps - 1
        if len(self.epochs) < self.window:
            return
        values = self._measure()
        confirmed = self.persist.update(epoch.index, values["holds"])
        if values["holds"]:
            if epoch.index == self.persist.run_start:
                self.at_first = values
            if self.worst is None or values["swing"] > self.worst["swing"]:
                self.worst = values
        if confirmed and self.first_step is None:
            self.first_step = self.at_first["first_step"]

    def _measure(self) -> dict[str, Any]:
        means = [m for _, m, _ in self.epochs]
        level = sum(means) / len(means)
        half = len(means) // 2
        earlier = min(means[:half])
        if self.best_before is not None:
            earlier = min(earlier, self.best_before)
        late = min(means[half:])
        improvement = (earlier - late) / earlier if earlier > 0 else math.inf
        swing = sum(abs(b - a) for a, b in zip(means, means[1:])) / (len(means) - 1)
        jitter = sum(j for _, _, j in self.epochs) / len(self.epochs)
        rel_swing = swing / level if level > 0 else 0.0
        rel_jitter = jitter / level if level > 0 else 0.0
        holds = (improvement < self.t["min_improvement"] and rel_swing >= self.t["swing"]
                 and rel_jitter >= self.t["variation"])
        first_epoch = self.epochs[0][0]
        return {"holds": holds, "first_epoch": first_epoch, "last_epoch": self.epochs[-1][0],
                "first_step": first_epoch * self.epoch_steps, "level": level, "best_before": earlier,
                "best_late": late, "improvement": improvement, "swing": rel_swing, "variation": rel_jitter,
                "epoch_min": min(means), "epoch_max": max(means)}

    def finish(self, end: Optional[dict]) -> list[Finding]:
        epoch = self.current
        if epoch is not None and epoch.n >= self.epoch_steps and not self.stopped:
            self.current = None
            self._close(epoch)  # the last epoch, when it is complete
        if self.first_step is None:
            return []
        facts = RunFacts.of(self.context)
        first, worst = self.at_first, self.worst or self.at_first
        p = self.persist
        change = (f"improved by only {100 * first['improvement']:.2g}%" if first["improvement"] > 0
                  else "did not improve")
        per_epoch = f"epoch of {self.epoch_steps} step{'s' if self.epoch_steps > 1 else ''}"
        message = (
            f"The loss stopped settling from epoch {first['first_epoch']} (step {first['first_step']}): over "
            f"epochs {first['first_epoch']}-{first['last_epoch']} its best epoch mean {change} "
            f"({fmt(first['best_late'])} vs {fmt(first['best_before'])} before), while the epoch mean swung by "
            f"{100 * first['swing']:.0f}% of its level {fmt(first['level'])} from one epoch to the next (between "
            f"{fmt(first['epoch_min'])} and {fmt(first['epoch_max'])}) and the step loss by "
            f"{100 * first['variation']:.0f}% from one step to the next; it held at the end of {p.held} of "
            f"{p.seen} epochs up to epoch {p.last}, the widest swing {100 * worst['swing']:.0f}% at epoch "
            f"{worst['last_epoch']} (one {per_epoch})."
        )
        fix_list = fixes(facts, "lower_lr", "larger_batch")
        evidence = {"first_epoch": first["first_epoch"], "last_epoch": p.last, "epochs_held": p.held,
                    "epochs_seen": p.seen, "steps_per_epoch": self.epoch_steps, "level": first["level"],
                    "best_before": first["best_before"], "best_late": first["best_late"],
                    "improvement": first["improvement"], "swing": first["swing"],
                    "variation": first["variation"], "worst_swing": worst["swing"],
                    "worst_epoch": worst["last_epoch"], "window": self.window}
        return [self.finding(step=self.first_step, layer=None, message=message, evidence=clean(evidence),
                             fixes=fix_list)]


class _RollingMedian:
    """The median and median absolute deviation of the last `size` values, kept sorted (bisect)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.sorted)

    def push(self, value: float) -> None:
        self.order.append(value)
        bisect.insort(self.sorted, value)
        if len(self.order) > self.size:
            del self.sorted[bisect.bisect_left(self.sorted, self.order.popleft())]

    @property
    def median(self) -> float:
        s, n = self.sorted, len(self.sorted)
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])

    def mad(self) -> float:
        med = self.median
        dev = sorted(abs(x - med) for x in self.sorted)
        n = len(dev)
        return dev[n // 2] if n % 2 else 0.5 * (dev[n // 2 - 1] + dev[n // 2])


#: the per-layer statistics whose jump before a spike is reported, as (record group, key, label)
_MOVERS = (("gW", "norm", "weight-gradient norm"), ("z", "max", "largest pre-activation"),
           ("z", "min", "smallest pre-activation"))


class _Movers:
    """The last full records, kept by reference (records never change once observed), and at a spike the
    earliest layer statistic among the `recent` ones at `factor` x its median over the records before them.

    Nothing is computed per record: the work happens only when a spike is found, which is rare.
    """

    def __init__(self, factor: float, recent: int = 8, baseline: int = 16) -> None:
        self.factor = factor
        self.recent = recent
        self.kept: deque[tuple[int, list[dict]]] = deque(maxlen=recent + baseline)

    def observe(self, record: dict) -> None:
        self.kept.append(record)

    def first_before(self, step: int) -> Optional[dict[str, Any]]:
        """The earliest jump among the last `recent` full records up to `step` (the largest one of that record)."""
        kept = [(step_of(r), record_layers(r)) for r in self.kept]
        kept = [k for k in kept if k[0] <= step and k[1]]
        recent, baseline = kept[-self.recent:], kept[:-self.recent]
        if len(baseline) < 4:
            return None
        for at, layers in recent:
            moved = []
            for layer in layers:
                name = layer_key(layer)
                for group, key, label in _MOVERS:
                    value = stat(layer, group, key)
                    if value is None:
                        continue
                    before = [abs(v) for v in (stat(_layer(ls, name), group, key) for _, ls in baseline)
                              if v is not None]
                    typical = statistics.median(before) if before else 0.0
                    if typical > 0 and abs(value) > self.factor * typical:
                        moved.append({"step": at, "layer": name, "statistic": f"{group}.{key}", "label": label,
                                      "value": abs(value), "typical": typical, "factor": abs(value) / typical})
            if moved:
                return max(moved, key=lambda m: m["factor"])
        return None


def _layer(layers: list[dict], name: str) -> Optional[dict]:
    for layer in layers:
        if layer_key(layer) == name:
            return layer
    return None


@register
class LossSpike(Detector):
    code = "loss-spike"
    severity = "warning"
    summary = "A step loss many robust deviations above its rolling median."
    thresholds = {
        "window": Threshold(128, "losses in the rolling window the median and deviation are taken over (practice: 128 steps)"),
        "deviations": Threshold(
            6,
            "a loss this many robust deviations above the rolling median is a spike (>); the deviation is "
            "1.4826 x the median absolute deviation, the standard deviation for normal noise, so 6 is far "
            "outside any minibatch noise (practice: 6)",
        ),
        "min_examples": Threshold(
            32,
            "examples a judged loss must average: smaller batches are judged as the mean of consecutive steps "
            "holding this many, since the loss of one example is no evidence of a spike in the training",
        ),
        "min_history": Threshold(64, "losses the window must hold before any is judged"),
        "min_ratio": Threshold(
            2,
            "the spike must also be at least this multiple of the median (>=): in practice a spike is a multiple "
            "of the typical loss; with full or large batches the MAD of a smooth curve is tiny, and 6 deviations "
            "can be a 20% wobble that the next step undoes",
        ),
        "min_rise": Threshold(
            0.01,
            "the spike must also rise above the median by this fraction of the first loss (>): a jump from "
            "1e-6 to 1e-5 near convergence is rounding, not a spike",
        ),
        "moved": Threshold(
            3,
            "a layer statistic (weight-gradient norm, largest or smallest pre-activation) at this multiple of "
            "its median over the 16 full records before (>), in the last 8 full records up to the spike, is named "
            "as what moved first",
        ),
    }
    explanation = Explanation(
        meaning=(
            "One step's loss (or, for batches of fewer than min_examples, the mean of a few consecutive steps) "
            "rose far above the typical loss of the steps before it, measured in robust deviations: the median "
            "absolute deviation ignores the spikes themselves, so a few do not hide each other. A spike is a step "
            "where the update overshot, or a batch the network handles very badly; repeated spikes often precede "
            "a divergence or a NaN. The finding names the layer statistic that moved first before it."
        ),
        causes=[
            "a learning rate at the edge of stability: most steps are fine, a sharp region throws one out",
            "Adam with a tiny eps after a long flat stretch (its second-moment estimate has decayed)",
            "a gradient explosion in one layer (see exploding-gradients)",
            "rare, very different examples or bad labels in the data",
        ],
        fixes=[
            "a lower optimizer.lr",
            "optimizer.clip_grad_norm: 1.0",
            "a larger training.batch_size",
        ],
        references=[
            "Chowdhery et al. 2022, PaLM §5.1: loss spikes during training, handled by restarting before them",
            "Hampel 1974 and Leys et al. 2013: median absolute deviation outlier rules (1.4826 x MAD)",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.batch = batch_of(context.start or {})
        self.means = ExampleMeans(self.batch, self.t["min_examples"])
        self.group = self.means.size
        self.roll = _RollingMedian(max(3, int(self.t["window"])))
        self.movers = _Movers(self.t["moved"])
        self.first_loss: Optional[float] = None
        self._mad: Optional[float] = None
        self._since_mad = 0
        self.spikes = 0
        self.first: Optional[dict[str, Any]] = None
        self.largest: Optional[dict[str, Any]] = None
        self.stopped = False

    def observe(self, record: dict) -> None:
        if self.stopped:
            return
        step = step_of(record)
        if record.get("full"):
            self.movers.observe(record)
        loss = finite(record.get("loss"))
        if loss is None:
            if record.get("loss") is not None:
                self.stopped = True  # non-finite: nonfinite tells that story, and the median is meaningless now
            return
        if self.first_loss is None:
            self.first_loss = loss
        group = self.means.add(step, loss)
        if group is None:
            return
        first_step, value = group
        self._judge(value, first_step, step)
        self.roll.push(value)
        self._since_mad += 1

    def _judge(self, value: float, first_step: int, step: int) -> None:
        roll = self.roll
        if len(roll) < self.t["min_history"]:
            return
        median = roll.median
        rise = value - median
        if rise <= self.t["min_rise"] * abs(self.first_loss or 0.0) or rise <= 0 \
                or value < self.t["min_ratio"] * median:
            return
        if self._mad is None or self._since_mad >= 16 or rise > 0.5 * self.t["deviations"] * MAD_TO_STD * self._mad:
            self._mad, self._since_mad = roll.mad(), 0  # exact whenever a spike is possible
        deviation = MAD_TO_STD * self._mad
        size = rise / deviation if deviation > 0 else math.inf
        if not size > self.t["deviations"]:
            return
        self.spikes += 1
        spike = {"step": step, "first_step": first_step, "loss": value, "median": median, "deviation": deviation,
                 "size": size, "history": len(roll), "moved_first": self.movers.first_before(step)}
        if self.first is None:
            self.first = spike
            self.first_step = step
        if self.largest is None or size > self.largest["size"]:
            self.largest = spike

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if self.first is None:
            return []
        facts = RunFacts.of(self.context)
        s, big = self.first, self.largest
        what = "loss" if self.group == 1 else f"mean loss of steps {s['first_step']}-{s['step']}"
        where = (f"at step {s['step']}" if self.group == 1 else
                 f"({self.group} steps of {self.batch} example{'s' if self.batch != 1 else ''})")  # batch known here
        moved = s["moved_first"]
        if moved:
            cause = (f"; the first layer statistic to jump before it was {moved['layer']}'s {moved['label']}, "
                     f"{fmt(moved['value'])} at step {moved['step']}, {fmt(moved['factor'])}x its median "
                     f"{fmt(moved['typical'])} over the full records before")
        else:
            cause = (f"; no layer statistic jumped {fmt(self.t['moved'])}x above its median in the full records "
                     "before it")
        more = "" if self.spikes == 1 else (
            f"; {self.spikes} spikes in the run, the largest {fmt(big['size'])} deviations at step {big['step']} "
            f"(loss {fmt(big['loss'])})")
        message = (
            f"The {what} jumped to {fmt(s['loss'])} {where}, {fmt(s['size'])} robust deviations above the median "
            f"{fmt(s['median'])} of the {s['history']} {'losses' if self.group == 1 else 'means'} before it (deviation 1.4826 x MAD = "
            f"{fmt(s['deviation'])}){cause}{more}."
        )
        fix_list = fixes(facts, "lower_lr", "clip", "larger_batch")
        evidence = {"step": s["step"], "loss": s["loss"], "median": s["median"], "deviation": s["deviation"],
                    "size": s["size"], "spikes": self.spikes, "largest_step": big["step"],
                    "largest_size": big["size"], "largest_loss": big["loss"], "moved_first": moved,
                    "steps_per_value": self.group, "window": self.roll.size,
                    "threshold": self.t["deviations"]}
        return [self.finding(step=s["step"], layer=None, message=message, evidence=clean(evidence),
                             fixes=fix_list)]

"""Optimisation health: update size relative to the weights, and the loss curve (divergence, plateau)."""

from __future__ import annotations

import math
from typing import Any, Optional

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    Convergence, Persistence, RunFacts, clean, finite, fixes, fmt, layer_key, number, record_layers, step_of,
    weight_count, yaml_number,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding


class _Side:
    """Update ratio out of range in one direction for one layer: persistence plus running log-mean and extreme."""

    def __init__(self, direction: str, patience: float) -> None:
        self.direction = direction
        self.persist = Persistence(patience)
        self.log_sum = 0.0
        self.log_n = 0
        self.extreme: Optional[tuple[int, float]] = None

    def update(self, step: int, ratio: Optional[float], holds: bool, ready: bool) -> bool:
        if holds and self.persist.run_len == 0 and not self.persist.confirmed:
            self.log_sum, self.log_n, self.extreme = 0.0, 0, None
        confirmed = self.persist.update(step, holds, ready)
        if holds and ratio is not None:
            if ratio > 0:
                self.log_sum += math.log(ratio)
                self.log_n += 1
            if self.extreme is None or (ratio > self.extreme[1]) == (self.direction == "high"):
                self.extreme = (step, ratio)
        return confirmed

    @property
    def typical(self) -> Optional[float]:
        return math.exp(self.log_sum / self.log_n) if self.log_n else None


@register
class LargeUpdateRatio(Detector):
    code = "large-update-ratio"
    severity = "warning"
    summary = "Update ratio ‖ΔW‖/‖W‖ far above ~1e-3 (learning rate too high) or far below (too low), sustained."
    thresholds = {
        "high": Threshold(
            0.1,
            "update ratio ||dW||/||W|| above which the learning rate is too high (>): 100x the ~1e-3 of the "
            "CS231n rule of thumb; at 0.1 every step rewrites a tenth of the weights",
        ),
        "low": Threshold(
            1e-7,
            "update ratio below which the learning rate is too low (<): 1e-4 of the CS231n ~1e-3; SageMaker "
            "Debugger's WeightUpdateRatio uses 1e-8",
        ),
        "target": Threshold(1e-3, "the ratio a suggested learning rate aims at (CS231n: ~1e-3)"),
        "min_grad_rms": Threshold(
            1e-7,
            "a low ratio only counts while the layer's RMS weight gradient is at least this (>=; the "
            "vanishing-gradients default): a tiny update from a (near-)zero gradient is a dead or vanishing "
            "layer, and a larger learning rate would not fix it",
        ),
        "patience": Threshold(10, "consecutive full records the ratio must stay out of range"),
        "warmup": Threshold(
            20,
            "steps a run of out-of-range records must outlast: the first steps from a random init often move a "
            "layer's weights by 10-50% per step while the loss falls fast, which is not a learning-rate problem",
        ),
        "converged": Threshold(
            1e-3,
            "a low ratio is not reported while the loss is below this fraction of the first finite loss: tiny "
            "updates are expected once nothing is left to learn",
        ),
    }
    explanation = Explanation(
        meaning=(
            "The update ratio is the norm of the change a step made to a layer's weights over the norm of the "
            "weights. Around 1e-3 is the rule of thumb for healthy training. Far above it, each step rewrites a "
            "large part of the weights and training oscillates, diverges or kills ReLU units; far below it, the "
            "weights barely move and training crawls. The suggested learning rate scales the current one by "
            "target / measured ratio."
        ),
        causes=[
            "a learning rate chosen for a different data scale, loss reduction or optimizer",
            "weights that are tiny compared with the gradient (a near-zero init)",
            "a learning rate so small that nothing changes",
        ],
        fixes=["optimizer.lr: lr x target / measured ratio", "optimizer.kind: adam"],
        references=[
            "CS231n, Neural Networks Part 3: the ratio of update magnitudes to value magnitudes should be ~1e-3",
            "SageMaker Debugger WeightUpdateRatio rule (large_threshold 10, small_threshold 1e-8)",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        specs = (context.start or {}).get("layers") or []
        self.sides = {str(s.get("name")): {d: _Side(d, self.t["patience"]) for d in ("high", "low")}
                      for s in specs}
        self.sizes = {str(s.get("name")): weight_count(s) for s in specs}
        self.direction: dict[str, str] = {}
        self.last_full: Optional[int] = None
        # per layer name: its high and low sides and sqrt(fan_in * units) (0.0 when that is not positive)
        self._layer = {name: (sides["high"], sides["low"],
                              math.sqrt(self.sizes.get(name) or 0) if (self.sizes.get(name) or 0) > 0 else 0.0)
                       for name, sides in self.sides.items()}
        self._high, self._low, self._min_grad_rms = self.t["high"], self.t["low"], self.t["min_grad_rms"]
        self._warmup = self.t["warmup"]
        self.progress = Convergence(self.t["converged"])

    @property
    def first_loss(self) -> Optional[float]:
        return self.progress.first

    def observe(self, record: dict) -> None:
        converged = self.progress.update(finite(record.get("loss")))
        layers = record_layers(record)
        if not layers:
            return
        step = step_of(record)
        self.last_full = step
        high, low, min_rms = self._high, self._low, self._min_grad_rms
        ready = step >= self._warmup
        lookup = self._layer.get
        for layer in layers:
            name = layer_key(layer)
            entry = lookup(name)
            if entry is None:
                continue
            high_side, low_side, root = entry
            ratio = finite(layer.get("update_ratio"))
            holds_high = ratio is not None and ratio > high
            holds_low = False
            if ratio is not None and ratio < low and not converged:
                g = layer.get("gW")
                g_norm = finite(g.get("norm")) if type(g) is dict else None  # stat(layer, "gW", "norm")
                holds_low = g_norm is not None and root > 0 and g_norm / root >= min_rms  # the layer is learning
            # a side that does not hold and has no run going would only stay as it is: skip it
            p = high_side.persist
            if holds_high or p.run_len or p.first is not None:
                self._feed(name, "high", high_side, step, ratio, holds_high, ready)
            p = low_side.persist
            if holds_low or p.run_len or p.first is not None:
                self._feed(name, "low", low_side, step, ratio, holds_low, ready)

    def _feed(self, name: str, direction: str, side: _Side, step: int, ratio: Optional[float], holds: bool,
              ready: bool) -> None:
        if self.direction.get(name, direction) != direction:
            return
        if side.update(step, ratio, holds, ready) and name not in self.direction:
            self.direction[name] = direction
            if self.first_step is None:
                self.first_step = side.persist.first

    def finish(self, end: Optional[dict]) -> list[Finding]:
        facts = RunFacts.of(self.context)
        out = []
        for name, direction in self.direction.items():
            side = self.sides[name][direction]
            p = side.persist
            to_end = p.reaches_end(self.last_full)
            typical = side.typical
            suggested = facts.lr * self.t["target"] / typical if typical else None
            limit = self.t[direction]
            word = "above" if direction == "high" else "below"
            extreme_step, extreme = side.extreme if side.extreme else (None, None)
            message = (
                f"{name} update ratio ||dW||/||W|| was {word} {fmt(limit)} "
                f"{p.describe(self.last_full)}: geometric mean {fmt(typical)}, "
                f"{'max' if direction == 'high' else 'min'} {fmt(extreme)} at step {fmt(extreme_step)}, against "
                f"~{fmt(self.t['target'])} for healthy training: optimizer.lr {fmt(facts.lr)} is "
                + ("too high." if direction == "high" else "too low.")
            )
            fix_list = []
            if suggested is not None:
                fix_list.append(f"optimizer.lr: {yaml_number(suggested)}  — brings the update ratio from "
                                f"{fmt(typical)} to ~{fmt(self.t['target'])}")
            if direction == "high":
                fix_list += fixes(facts, "clip")
            elif facts.optimizer == "sgd":
                fix_list.append("optimizer.kind: adam  — step sizes adapt to each parameter's gradient scale")
            evidence = {"direction": direction, "threshold": limit, "geometric_mean": typical,
                        "extreme": extreme, "extreme_step": extreme_step, "lr": facts.lr,
                        "suggested_lr": suggested, "first": p.first, "last": p.last, "records": p.held,
                        "records_seen": p.seen,
                        "to_end": to_end}
            out.append(self.finding(step=p.first, layer=name, message=message, evidence=clean(evidence),
                                    fixes=fix_list))
        return out


@register
class LossDivergence(Detector):
    code = "loss-divergence"
    severity = "warning"
    summary = "Loss rising far above its best value."
    thresholds = {
        "factor": Threshold(
            10,
            "the smoothed loss above this multiple of its best smoothed value is diverging (>): an order of "
            "magnitude, far beyond minibatch noise",
        ),
        "warmup": Threshold(10, "steps before the check starts (the first steps of a run may legitimately rise)"),
        "smoothing": Threshold(
            0.1,
            "weight of the newest loss in the exponential moving average the check uses (0.1: about the last "
            "10 steps), so one unlucky minibatch does not count",
        ),
        "min_rise": Threshold(
            0.01,
            "the rise must also exceed this fraction of the first loss (>): a loss going from 1e-12 to 1e-10 is "
            "rounding noise, not divergence",
        ),
    }
    explanation = Explanation(
        meaning=(
            "After reaching its best value the loss climbed back to many times that value: the optimizer is "
            "overshooting. Left alone this usually ends in inf/NaN (see nonfinite) or in a net that has forgotten "
            "what it learned."
        ),
        causes=[
            "a learning rate too large for the sharper region the loss reached",
            "momentum / Adam steps accumulating past a minimum",
            "a gradient explosion (see exploding-gradients)",
        ],
        fixes=["a lower optimizer.lr", "optimizer.clip_grad_norm: 1.0"],
        references=[
            "Goodfellow, Bengio & Courville 2016, Deep Learning §8.2 (ill-conditioning: the loss rises when the "
            "step overshoots), §11.4.1 (a learning rate too high makes the loss rise)",
            "SageMaker Debugger LossNotDecreasing rule",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.first_loss: Optional[float] = None
        self.first_seen: Optional[int] = None
        self.ema: Optional[float] = None
        self.best: Optional[tuple[int, float]] = None
        self.best_at_fire: Optional[tuple[int, float]] = None
        self.level_at_fire: Optional[float] = None
        self.count = 0
        self.last: Optional[int] = None
        self.peak: Optional[tuple[int, float]] = None
        self.last_step: Optional[int] = None

    def observe(self, record: dict) -> None:
        step = step_of(record)
        self.last_step = step
        loss = number(record.get("loss"))
        if loss is None or math.isnan(loss):
            return
        if self.first_seen is None:
            self.first_seen = step
        if self.peak is None or loss > self.peak[1]:
            self.peak = (step, loss)
        if math.isfinite(loss):
            if self.first_loss is None:
                self.first_loss = loss
            a = self.t["smoothing"]
            self.ema = loss if self.ema is None else self.ema + a * (loss - self.ema)
            level = self.ema
        elif loss > 0:
            level = math.inf
        else:
            return
        if step - self.first_seen < self.t["warmup"]:
            self._track_best(step, level)
            return
        holds = (self.best is not None and level > self.t["factor"] * self.best[1]
                 and self.first_loss is not None and level - self.best[1] > self.t["min_rise"] * abs(self.first_loss))
        if holds:
            self.count += 1
            self.last = step
            if self.first_step is None:
                self.first_step = step
                self.best_at_fire = self.best
                self.level_at_fire = level
        self._track_best(step, level)

    def _track_best(self, step: int, level: float) -> None:
        if math.isfinite(level) and (self.best is None or level < self.best[1]):
            self.best = (step, level)

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if self.first_step is None:
            return []
        facts = RunFacts.of(self.context)
        best_step, best = self.best_at_fire
        to_end = self.last == self.last_step
        message = (
            f"The loss (moving average) rose to {fmt(self.level_at_fire)} at step {self.first_step}, more than "
            f"{fmt(self.t['factor'])}x its best {fmt(best)} at step {best_step}; it stayed that high for "
            f"{self.count} step(s) up to " + ("the end" if to_end else f"step {self.last}")
            + f"; the loss itself peaked at {fmt(self.peak[1])} at step {self.peak[0]}."
        )
        fix_list = fixes(facts, "lower_lr", "clip")
        evidence = {"step": self.first_step, "level": self.level_at_fire, "best": best, "best_step": best_step,
                    "peak": self.peak[1], "peak_step": self.peak[0], "steps_above": self.count, "last": self.last,
                    "to_end": to_end, "factor": self.t["factor"], "first_loss": self.first_loss}
        return [self.finding(step=self.first_step, layer=None, message=message, evidence=clean(evidence),
                             fixes=fix_list)]


@register
class LossPlateau(Detector):
    code = "loss-plateau"
    severity = "info"
    summary = "The loss stopped improving while still far from zero."
    thresholds = {
        "window": Threshold(100, "steps per window; the best loss of each window is compared with all earlier ones"),
        "min_improvement": Threshold(
            0.001,
            "relative improvement of the best loss per window below which the loss has stalled (<); "
            "SageMaker Debugger's LossNotDecreasing uses 0.1% (diff_percent)",
        ),
        "min_fraction": Threshold(
            0.1,
            "only reported while the loss is above this fraction of the first loss (>): a plateau near zero is "
            "convergence, not a problem",
        ),
    }
    explanation = Explanation(
        meaning=(
            "Over a whole window of steps the best loss improved by less than the tolerance, while it is still a "
            "large fraction of where it started. Something keeps the net from learning: other findings usually say "
            "what (dead-relu, vanishing-gradients, saturated-activations, large-update-ratio)."
        ),
        causes=[
            "dead ReLU units or saturated sigmoid/tanh units passing no gradient",
            "a learning rate far too small (or so large that steps bounce across a valley)",
            "a model too small, or an output/loss mismatch, for the task",
        ],
        fixes=["optimizer.kind: adam", "a different optimizer.lr", "fix the finding that names the cause"],
        references=[
            "SageMaker Debugger LossNotDecreasing rule (diff_percent 0.1%)",
            "Keras ReduceLROnPlateau (patience, min_delta): the same test used to lower the learning rate",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.window = max(1, int(self.t["window"]))
        self.first_loss: Optional[float] = None
        self.block: Optional[int] = None
        self.block_min: Optional[float] = None
        self.best_before: Optional[float] = None
        self.hit: Optional[dict[str, Any]] = None
        self.windows = 0
        self.last_window_end: Optional[int] = None
        self.last_step: Optional[int] = None

    def observe(self, record: dict) -> None:
        step = step_of(record)
        self.last_step = step
        loss = finite(record.get("loss"))
        block = step // self.window
        if self.block is not None and block != self.block:
            self._close(self.block)
        if self.block != block:
            self.block, self.block_min = block, None
        if loss is not None:
            if self.first_loss is None:
                self.first_loss = loss
            if self.block_min is None or loss < self.block_min:
                self.block_min = loss
        if step % self.window == self.window - 1:
            self._close(block)
            self.block, self.block_min = block + 1, None

    def _close(self, block: int) -> None:
        low = self.block_min
        if low is None:
            return
        before = self.best_before
        self.best_before = low if before is None else min(before, low)
        if before is None or self.first_loss is None or before <= 0:
            return
        improvement = (before - low) / before
        stalled = improvement < self.t["min_improvement"] and low > self.t["min_fraction"] * self.first_loss
        if not stalled:
            return
        start, end = block * self.window, block * self.window + self.window - 1
        self.windows += 1
        self.last_window_end = end
        if self.hit is None:
            self.hit = {"start": start, "end": end, "best_before": before, "best": low, "improvement": improvement}
            self.first_step = start

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if self.hit is None:
            return []
        h = self.hit
        facts = RunFacts.of(self.context)
        reached_end = self.last_window_end is not None and self.last_step is not None and \
            self.last_step - self.last_window_end < self.window
        change = (f"improved by only {100 * h['improvement']:.2g}%" if h["improvement"] > 0
                  else "did not improve at all")
        message = (
            f"The loss {change} between step {h['start']} and step {h['end']} "
            f"(best {fmt(h['best'], 4)} vs {fmt(h['best_before'], 4)} before), still "
            f"{100 * h['best'] / self.first_loss:.0f}% of its first value {fmt(self.first_loss, 4)}; "
            f"{self.windows} window(s) of {self.window} steps stalled like this, the last ending at step "
            f"{self.last_window_end}" + (" (to the end)" if reached_end else "") + "."
        )
        fix_list = []
        if facts.optimizer == "sgd":
            fix_list.append("optimizer.kind: adam  — adapts step sizes where plain SGD crawls")
        fix_list.append(f"optimizer.lr: {yaml_number(facts.lr * 3)}  — if large-update-ratio reports a low ratio; "
                        "lower it instead if the loss bounces")
        evidence = {**h, "first_loss": self.first_loss, "windows": self.windows,
                    "last_window_end": self.last_window_end, "window": self.window}
        return [self.finding(step=h["start"], layer=None, message=message, evidence=clean(evidence),
                             fixes=fix_list)]

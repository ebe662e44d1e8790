"""Gradient scale: norms that blow up (absolutely, geometrically, or first layer vs last) or vanish."""

from __future__ import annotations

import math
from typing import Any, Optional

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    Convergence, Persistence, RunFacts, clean, finite, fixes, fmt, layer_key, number, record_layers, stat, step_of, weight_count,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding


@register
class ExplodingGradients(Detector):
    code = "exploding-gradients"
    severity = "warning"
    summary = "Gradient norms above a threshold, growing geometrically, or first/last layer ratio above 70."
    thresholds = {
        "max_norm": Threshold(
            1e3,
            "global gradient norm above which a step is exploding (>). Clipping thresholds in practice are 1-10 "
            "(Pascanu et al. 2013 clip at a few times the typical norm); 1e3 is two orders beyond, well clear of "
            "healthy mean-reduced MLPs",
        ),
        "growth": Threshold(
            2.0,
            "per-step growth factor of the global gradient norm (>=) that counts as geometric growth "
            "(Pascanu et al. 2013: exploding gradients grow exponentially)",
        ),
        "growth_steps": Threshold(
            4,
            "consecutive steps of growth by `growth` needed (default: 2^4 = 16x in 4 steps)",
        ),
        "growth_min_norm": Threshold(
            10,
            "geometric growth only counts once the norm has passed this (>); a norm growing from 1e-4 to 1e-3 is a "
            "net leaving a flat start, not an explosion, and mean-reduced healthy MLPs rarely pass 10",
        ),
        "max_ratio": Threshold(
            70,
            "first-layer / output-layer weight-gradient norm ratio above which gradients explode towards the input "
            "(>); AUTOTRAINER's beta_3 = 70 (Zhang et al., ICSE 2021)",
        ),
        "patience": Threshold(
            3, "consecutive full records the ratio must stay above max_ratio (a single record is a blip)",
        ),
    }
    explanation = Explanation(
        meaning=(
            "The gradient is growing out of proportion: its global norm is huge, or it multiplies by a constant "
            "factor step after step, or the first layer's gradient is tens of times the output layer's (each layer "
            "multiplies the backpropagated signal by more than 1). The next updates overshoot and the weights "
            "usually reach inf within a few steps."
        ),
        causes=[
            "unnormalized inputs or targets (x in [0, 100) gives gradients 100x larger than x in [-1, 1])",
            "sum reduction: the gradient grows with the batch size",
            "a learning rate too large for the curvature: every step overshoots further",
            "weights initialised too large for the depth",
        ],
        fixes=[
            "data.normalize: standardize, data.normalize_target: standardize",
            "loss.reduction: mean",
            "a lower optimizer.lr",
            "optimizer.clip_grad_norm: 1.0",
        ],
        references=[
            "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks",
            "Zhang et al. 2021, AUTOTRAINER (ICSE): exploding gradient when |g_first| / |g_last| > 70",
            "LeCun, Bottou, Orr & Müller 1998, Efficient BackProp §4.3 (input normalisation)",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.prev_norm: Optional[tuple[int, float]] = None
        self.growth_run = 0
        self.growth_from: tuple[int, float] = (0, 0.0)
        self.growth_hit: Optional[dict[str, Any]] = None
        self.above_first: Optional[int] = None
        self.above_count = 0
        self.above_last: Optional[int] = None
        self.peak: Optional[tuple[int, float]] = None
        self.ratio = Persistence(self.t["patience"])
        self.ratio_peak: Optional[tuple[int, float, str, str]] = None
        self.ratio_first_value: Optional[float] = None
        self.last_step: Optional[int] = None
        self.last_full: Optional[int] = None
        self._max_norm, self._growth_factor = self.t["max_norm"], self.t["growth"]
        self._max_ratio = self.t["max_ratio"]

    def observe(self, record: dict) -> None:
        get = record.get
        step = step_of(record)
        self.last_step = step
        gn = number(get("grad_norm"))
        if gn is not None and gn == gn:  # not NaN
            self._absolute(step, gn)
            self._growth(step, gn)
        else:
            self.prev_norm, self.growth_run = None, 0
        if get("full"):
            self.last_full = step
            self._ratio(step, record)

    def _hit(self, step: int) -> None:
        if self.first_step is None:
            self.first_step = step

    def _absolute(self, step: int, gn: float) -> None:
        peak = self.peak
        if peak is None or gn > peak[1]:
            self.peak = (step, gn)
        if gn > self._max_norm:
            self.above_count += 1
            self.above_last = step
            if self.above_first is None:
                self.above_first = step
                self._hit(step)

    def _growth(self, step: int, gn: float) -> None:
        prev = self.prev_norm
        fin = gn - gn == 0.0
        self.prev_norm = (step, gn) if fin else None
        if prev is None or prev[1] <= 0 or not fin or gn < self._growth_factor * prev[1]:
            self.growth_run = 0
            return
        if self.growth_run == 0:
            self.growth_from = prev
        self.growth_run += 1
        if self.growth_hit is None and self.growth_run >= self.t["growth_steps"] and gn > self.t["growth_min_norm"]:
            first, start_norm = self.growth_from
            self.growth_hit = {"first": first, "confirmed": step, "from": start_norm, "to": gn,
                               "steps": self.growth_run}
            self._hit(first)
        elif self.growth_hit is not None and self.growth_hit["confirmed"] == prev[0]:
            self.growth_hit.update(confirmed=step, to=gn, steps=self.growth_run)

    def _ratio(self, step: int, record: dict) -> None:
        layers = record_layers(record)
        holds = False
        if len(layers) >= 2:
            first, last = stat(layers[0], "gW", "norm"), stat(layers[-1], "gW", "norm")
            if first is not None and last is not None and last > 0:
                value = first / last
                holds = value > self._max_ratio
                if holds and (self.ratio_peak is None or value > self.ratio_peak[1]):
                    self.ratio_peak = (step, value, str(layers[0].get("name")), str(layers[-1].get("name")))
        if self.ratio.update(step, holds):
            self._hit(self.ratio.first)

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if self.first_step is None:
            return []
        parts: list[str] = []
        evidence: dict[str, Any] = {"max_norm": self.t["max_norm"]}
        if self.above_first is not None:
            peak_step, peak = self.peak
            when = (f"at step {self.above_first}" if self.above_count == 1 else
                    f"at {self.above_count} steps from step {self.above_first} to step {self.above_last}")
            parts.append(f"gradient norm exceeded {fmt(self.t['max_norm'])} {when}, peaking at {fmt(peak)} at step "
                         f"{peak_step}")
            evidence.update(above_first=self.above_first, above_last=self.above_last, above_steps=self.above_count,
                            peak=peak, peak_step=peak_step)
        if self.growth_hit is not None:
            g = self.growth_hit
            parts.append(
                f"it grew at least {fmt(self.t['growth'])}x per step for {g['steps']} consecutive steps, from "
                f"{fmt(g['from'])} at step {g['first']} to {fmt(g['to'])} at step {g['confirmed']}")
            evidence["growth"] = {k: g[k] for k in ("first", "confirmed", "from", "to", "steps")}
        if self.ratio.confirmed and self.ratio_peak is not None:
            r_step, r_value, first_name, last_name = self.ratio_peak
            parts.append(
                f"the {first_name}/{last_name} gradient-norm ratio stayed above {fmt(self.t['max_ratio'])} "
                f"{self.ratio.describe(self.last_full)}, up to {fmt(r_value)} at "
                f"step {r_step}")
            evidence["ratio"] = {"first": self.ratio.first, "last": self.ratio.last, "records": self.ratio.held,
                                 "records_seen": self.ratio.seen,
                                 "peak": r_value, "peak_step": r_step, "max_ratio": self.t["max_ratio"]}
        facts = RunFacts.of(self.context)
        message = "Exploding gradients: " + "; ".join(parts) + "."
        fix_list = fixes(facts, "normalize", "normalize_target", "reduction_mean", "lower_lr", "clip")
        if self.ratio.confirmed:
            fix_list += [f for f in fixes(facts, "fan_in_init") if f not in fix_list]
        return [self.finding(step=self.first_step, layer=None, message=message, evidence=clean(evidence),
                             fixes=fix_list)]


class _LayerVanishing:
    """Per-layer state: the persistence of 'gradient too small' and the numbers for the message."""

    def __init__(self, name: str, patience: float) -> None:
        self.name = name
        self.persist = Persistence(patience)
        self.worst: Optional[dict[str, Any]] = None
        self.first_values: Optional[dict[str, Any]] = None

    def note(self, values: dict[str, Any]) -> None:
        if values["step"] == self.persist.run_start:
            self.first_values = values
        key = values.get("rms") if values.get("rms") is not None else math.inf
        if self.worst is None or key < (self.worst.get("rms") if self.worst.get("rms") is not None else math.inf):
            self.worst = values


@register
class VanishingGradients(Detector):
    code = "vanishing-gradients"
    severity = "warning"
    summary = "First-layer gradient norm tiny relative to the last layer's (or tiny absolutely), persisting."
    thresholds = {
        "ratio": Threshold(
            1e-3,
            "first-layer / output-layer weight-gradient norm ratio below which the gradient vanishes on its way "
            "back (<); AUTOTRAINER's beta_1 = 1e-3 (Zhang et al., ICSE 2021)",
        ),
        "first_norm": Threshold(
            1e-4,
            "the ratio rule also needs the first layer's gradient norm below this (<); AUTOTRAINER's beta_2 = 1e-4",
        ),
        "min_rms": Threshold(
            1e-7,
            "root-mean-square weight gradient of any layer below which it is vanishing (<); SageMaker Debugger's "
            "VanishingGradient threshold is 1e-7 on the mean |g|, and mean |g| <= RMS. Exactly 0 is left to "
            "dead-relu (units that pass no gradient at all)",
        ),
        "patience": Threshold(5, "consecutive full records the condition must hold (one small gradient is a blip)"),
        "converged": Threshold(
            1e-3,
            "skip records whose loss is below this fraction of the first finite loss: small gradients there mean "
            "there is little left to learn, not that they vanish",
        ),
    }
    explanation = Explanation(
        meaning=(
            "Backpropagation multiplies the gradient by each layer's weights and activation derivative; when those "
            "factors are below 1 the gradient shrinks geometrically towards the input, and the first layers stop "
            "learning while the loss is still high. Sigmoid's derivative is at most 0.25 and tanh's at most 1, both "
            "near 0 when saturated."
        ),
        causes=[
            "deep stacks of sigmoid/tanh layers (each multiplies the gradient by <= 0.25 for sigmoid)",
            "saturated activations (large pre-activations from unnormalized inputs or large weights)",
            "weights initialised too small for the depth",
        ],
        fixes=[
            "model.activation: relu (or leaky_relu) with model.init: he_normal",
            "model.init: xavier_normal for sigmoid/tanh",
            "data.normalize: standardize",
            "fewer layers in model.hidden, or optimizer.kind: adam",
        ],
        references=[
            "Hochreiter 1991; Bengio, Simard & Frasconi 1994, Learning long-term dependencies with gradient descent "
            "is difficult",
            "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks",
            "Zhang et al. 2021, AUTOTRAINER (ICSE): vanishing when |g_first|/|g_last| < 1e-3 and |g_first| < 1e-4",
            "SageMaker Debugger VanishingGradient rule: mean |gradient| < 1e-7",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        specs = (context.start or {}).get("layers") or []
        self.sizes = {str(l.get("name")): weight_count(l) for l in specs}
        self.states = {str(l.get("name")): _LayerVanishing(str(l.get("name")), self.t["patience"]) for l in specs}
        self.last_full: Optional[int] = None
        # per layer name: its state and sqrt(fan_in * units) (0.0 when that is not positive)
        self._layer = {name: (state, math.sqrt(self.sizes.get(name) or 0) if (self.sizes.get(name) or 0) > 0 else 0.0)
                       for name, state in self.states.items()}
        self._t_ratio, self._first_norm = self.t["ratio"], self.t["first_norm"]
        self._min_rms = self.t["min_rms"]
        self.progress = Convergence(self.t["converged"])

    @property
    def first_loss(self) -> Optional[float]:
        return self.progress.first

    def observe(self, record: dict) -> None:
        loss = finite(record.get("loss"))
        converged = self.progress.update(loss)
        layers = record_layers(record)
        if not layers:
            return
        step = step_of(record)
        self.last_full = step
        ratio = None
        if len(layers) >= 2:
            first, last = stat(layers[0], "gW", "norm"), stat(layers[-1], "gW", "norm")
            if first is not None and last is not None and last > 0:
                ratio = first / last
        t_ratio, t_first, min_rms = self._t_ratio, self._first_norm, self._min_rms
        lookup = self._layer.get
        for i, layer in enumerate(layers):
            entry = lookup(layer_key(layer))
            if entry is None:
                continue
            state, root = entry
            g = layer.get("gW")
            norm = finite(g.get("norm")) if type(g) is dict else None
            rms = norm / root if norm is not None and root > 0 else None
            by_ratio = (i == 0 and ratio is not None and ratio < t_ratio
                        and norm is not None and norm < t_first)
            by_rms = rms is not None and 0 < rms < min_rms  # exactly 0: dead units, see dead-relu
            holds = (by_ratio or by_rms) and not converged
            persist = state.persist
            if not holds and not persist.run_len and persist.first is None:
                persist.active = False  # Persistence.update's idle case, without the call
                continue
            confirmed = persist.update(step, holds)
            if holds:
                state.note({"step": step, "norm": norm, "rms": rms, "ratio": ratio if i == 0 else None,
                            "by_ratio": by_ratio, "by_rms": by_rms, "loss": loss})
            if confirmed and self.first_step is None:
                self.first_step = persist.first

    def finish(self, end: Optional[dict]) -> list[Finding]:
        facts = RunFacts.of(self.context)
        found = []
        for state in self.states.values():
            p = state.persist
            if not p.confirmed:
                continue
            w = state.worst or {}
            to_end = p.reaches_end(self.last_full)
            rules = []
            if w.get("by_ratio") or (state.first_values or {}).get("by_ratio"):
                rules.append(f"its gradient norm is {fmt(w.get('ratio'))} of the output layer's "
                             f"(< {fmt(self.t['ratio'])}) and {fmt(w.get('norm'))} absolutely "
                             f"(< {fmt(self.t['first_norm'])})")
            if w.get("by_rms"):
                rules.append(f"its RMS weight gradient is {fmt(w.get('rms'))} (< {fmt(self.t['min_rms'])})")
            message = (f"Gradients vanish at {state.name}: " + " and ".join(rules or ["its gradient is tiny"])
                       + f" {p.describe(self.last_full)}, at loss {fmt(w.get('loss'))} "
                       f"(first loss {fmt(self.first_loss)}).")
            fix_list = self._fixes(facts)
            evidence = {"first": p.first, "last": p.last, "records": p.held, "records_seen": p.seen, "to_end": to_end,
                        "worst": w, "first_loss": self.first_loss,
                        "ratio_threshold": self.t["ratio"], "min_rms": self.t["min_rms"]}
            found.append(self.finding(step=p.first, layer=state.name, message=message, evidence=clean(evidence),
                                      fixes=fix_list))
        return found

    def _fixes(self, facts: RunFacts) -> list[str]:
        out = []
        if facts.activation in ("sigmoid", "tanh"):
            out.append(f"model.activation: relu  — {facts.activation}'s derivative is at most "
                       f"{'0.25' if facts.activation == 'sigmoid' else '1'} and near 0 when saturated, "
                       f"and {facts.depth} layers multiply it")
            out.append("model.init: he_normal  — keeps the signal's scale through ReLU layers")
        out += fixes(facts, "fan_in_init", "normalize")
        if facts.optimizer == "sgd":
            out.append("optimizer.kind: adam  — scales each parameter's step by its own gradient size")
        return out

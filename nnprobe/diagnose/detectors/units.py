"""Activation health: ReLU units that never fire, sigmoid/tanh units stuck in their flat region."""

from __future__ import annotations

from typing import Any, Optional

from nnprobe.nn.activations import ACTIVATIONS
from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    RELU_FAMILY, SQUASHING, Persistence, RunFacts, clean, finite, fixes, fmt, layer_key, pct, record_layers,
    stat, step_of, yaml_number,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding


class _LayerWatch:
    """One watched layer: its persistence and the numbers of its worst record."""

    def __init__(self, spec: dict, patience: float) -> None:
        self.name = str(spec.get("name"))
        self.units = int(spec.get("units") or 0)
        self.activation = str(spec.get("activation"))
        self.is_output = bool(spec.get("is_output"))
        self.persist = Persistence(patience)
        self.at_first: Optional[dict[str, Any]] = None
        self.peak: Optional[dict[str, Any]] = None
        self.latest: Optional[dict[str, Any]] = None

    def note(self, values: dict[str, Any], key: str) -> None:
        self.latest = values
        if values["step"] == self.persist.run_start:
            self.at_first = values
        if self.peak is None or values[key] > self.peak[key]:
            self.peak = values


class _LayerDetector(Detector):
    """A detector that watches some layers' stats in full records, one persistence per layer."""

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        specs = (context.start or {}).get("layers") or []
        self.watch = {w.name: w for w in (_LayerWatch(s, self.t["patience"]) for s in specs if self.watched(s))}
        self.last_full: Optional[int] = None
        self._fraction = self.t.get("fraction")

    def watched(self, spec: dict) -> bool:
        raise NotImplementedError

    def measure(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        """The numbers of this record for this layer, with 'holds': bool; None when not measurable."""
        raise NotImplementedError

    def holding(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        """measure()'s numbers when the condition holds, else None (the common case, without building them)."""
        values = self.measure(watch, layer)
        return values if values and values["holds"] else None

    def observe(self, record: dict) -> None:
        layers = record_layers(record)
        if not layers:
            return
        step = step_of(record)
        self.last_full = step
        if not self.watch:
            return
        lookup, holding = self.watch.get, self.holding
        for layer in layers:
            watch = lookup(layer_key(layer))
            if watch is None:
                continue
            values = holding(watch, layer)
            persist = watch.persist
            if values is None:
                if not persist.run_len and persist.first is None:
                    persist.active = False  # Persistence.update's idle case, without the call
                    continue
                confirmed = persist.update(step, False)
            else:
                confirmed = persist.update(step, True)
                values["step"] = step
                watch.note(values, self.peak_key)
            if confirmed and self.first_step is None:
                self.first_step = persist.first

    peak_key = "fraction"

    def finish(self, end: Optional[dict]) -> list[Finding]:
        facts = RunFacts.of(self.context)
        out = []
        for watch in self.watch.values():
            p = watch.persist
            if not p.confirmed:
                continue
            out.append(self.report(watch, facts, p.describe(self.last_full), p.reaches_end(self.last_full)))
        return out

    def report(self, watch: _LayerWatch, facts: RunFacts, span: str, to_end: bool) -> Finding:
        raise NotImplementedError


@register
class DeadRelu(_LayerDetector):
    code = "dead-relu"
    severity = "warning"
    summary = "At least `fraction` of a ReLU layer's units output 0 for every example of the batch, persisting."
    thresholds = {
        "fraction": Threshold(
            0.5,
            "fraction of a relu / leaky_relu layer's units that are dead (>=): pre-activation <= 0 for every "
            "example; SageMaker Debugger's DeadRelu rule flags a layer at 50% inactive units (threshold_layer)",
        ),
        "patience": Threshold(
            10,
            "consecutive full records it must hold: a unit that gets no gradient for 10 updates rarely comes back "
            "on its own, while one unlucky batch does not count",
        ),
    }
    explanation = Explanation(
        meaning=(
            "A ReLU unit whose pre-activation is <= 0 for every example outputs 0 and passes no gradient back, so "
            "nothing ever moves its weights again: it is dead. (A leaky ReLU passes negative_slope of the gradient, "
            "which is too little to revive it at 1e-4.) When most of a layer is dead the network has lost most of "
            "its capacity: accuracy stalls around what the few live units can do."
        ),
        causes=[
            "too large updates: one big step pushes a unit's weights and bias so that z < 0 everywhere (CS231n: "
            "with a high learning rate up to 40% of a network can die)",
            "a large negative bias, from the init or from the updates",
            "unnormalized inputs that put every example on the same side of a unit's hyperplane",
        ],
        fixes=[
            "a lower optimizer.lr",
            "model.init: he_normal, model.bias_init: zeros (or a small positive constant)",
            "model.activation: leaky_relu with model.negative_slope: 0.01",
            "data.normalize: standardize",
        ],
        references=[
            "CS231n, Neural Networks Part 1: the dying ReLU problem",
            "Lu et al. 2019, Dying ReLU and Initialization: Theory and Numerical Examples",
            "SageMaker Debugger DeadRelu rule: threshold_layer 50%",
            "Zhang et al. 2021, AUTOTRAINER (ICSE): dying ReLU when >= 70% of gradients are zero",
        ],
    )

    def watched(self, spec: dict) -> bool:
        return str(spec.get("activation")) in RELU_FAMILY

    def measure(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        dead = stat(layer, "a", "dead")
        if dead is None or watch.units <= 0:
            return None
        fraction = dead / watch.units
        return {"holds": fraction >= self.t["fraction"], "dead": int(dead), "fraction": fraction,
                "zero_frac": stat(layer, "a", "zero_frac"), "grad_zero_frac": stat(layer, "gW", "zero_frac")}

    def holding(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        a = layer.get("a")
        dead = finite(a.get("dead")) if type(a) is dict else None  # stat(layer, "a", "dead")
        if dead is None or watch.units <= 0 or not dead / watch.units >= self._fraction:
            return None
        return self.measure(watch, layer)

    peak_key = "dead"

    def report(self, watch: _LayerWatch, facts: RunFacts, span: str, to_end: bool) -> Finding:
        first = watch.at_first or watch.peak or {}
        peak = watch.peak or first
        batch = f"all {facts.batch} examples" if facts.batch else "every example"
        leaky = (f" (leaky slope {fmt(facts.negative_slope)} passes only that fraction of the gradient)"
                 if watch.activation == "leaky_relu" else " (they pass no gradient, so nothing revives them)")
        latest = watch.latest or peak
        counts = "" if first.get("dead") == peak.get("dead") == latest.get("dead") else (
            f"; {peak.get('dead')} dead at most (step {peak.get('step')}), {latest.get('dead')} at step "
            f"{latest.get('step')}")
        message = (
            f"{first.get('dead')} of {watch.units} units of {watch.name} output 0 for {batch} {span}{leaky}{counts}"
            + (f"; {pct(peak.get('grad_zero_frac'))} of its weight gradient is exactly 0"
               if watch.activation == "relu" and peak.get("grad_zero_frac") is not None else "") + "."
        )
        fix_list = [f"optimizer.lr: {yaml_number(facts.lr / 10)}  — large steps push units to z <= 0 "
                    f"for every example (lr {fmt(facts.lr)})"]
        if facts.init not in ("he_normal", "he_uniform"):
            fix_list.append(f"model.init: he_normal  — zero-centred weights scaled for ReLU (now {facts.init})")
        fix_list += fixes(facts, "bias_zeros")
        if watch.activation == "relu":
            fix_list.append("model.activation: leaky_relu  — a negative slope keeps a gradient flowing")
        elif facts.negative_slope < 0.01:
            fix_list.append(f"model.negative_slope: 0.01  — {fmt(facts.negative_slope)} is too small to revive "
                            "a unit")
        fix_list += fixes(facts, "normalize")
        evidence = {"units": watch.units, "dead_at_first": first.get("dead"), "peak_dead": peak.get("dead"),
                    "dead_at_last": latest.get("dead"),
                    "peak_step": peak.get("step"), "fraction_threshold": self.t["fraction"],
                    "first": watch.persist.first, "last": watch.persist.last, "records": watch.persist.held,
                    "records_seen": watch.persist.seen, "to_end": to_end, "zero_frac": peak.get("zero_frac"),
                    "grad_zero_frac": peak.get("grad_zero_frac"),
                    "batch": facts.batch or None}
        return self.finding(step=watch.persist.first, layer=watch.name, message=message, evidence=clean(evidence),
                            fixes=fix_list)


# Where each squashing function is flat: the |z| past which its derivative is below 1% of its maximum,
# the definition of z.sat_frac, as each activation declares it (Activation.saturation).
FLAT_REGION = {name: ACTIVATIONS[name].saturation for name in SQUASHING}


@register
class SaturatedActivations(_LayerDetector):
    code = "saturated-activations"
    severity = "warning"
    summary = "Most of a sigmoid/tanh layer's inputs are in the flat region where its derivative is ~0, persisting."
    thresholds = {
        "fraction": Threshold(
            0.5,
            "fraction of a layer's pre-activations in the flat region (z.sat_frac, derivative < 1% of its maximum) "
            "that counts as saturated (>=); SageMaker Debugger's SaturatedActivation flags a layer at 50% "
            "(threshold_layer)",
        ),
        "patience": Threshold(10, "consecutive full records it must hold (one saturated batch is a blip)"),
        "sigmoid_min": Threshold(-23, "SageMaker Debugger's sigmoid band lower end: z below it is reported"),
        "sigmoid_max": Threshold(17, "SageMaker Debugger's sigmoid band upper end (sigmoid(17) rounds to 1 in "
                                     "float32): z above it is reported"),
        "tanh_band": Threshold(9.5, "SageMaker Debugger's tanh band (-9.4999, 9.4999): |z| beyond it is reported"),
    }
    explanation = Explanation(
        meaning=(
            "A sigmoid or tanh unit whose input is far from 0 sits on the flat part of the curve: its derivative "
            "is nearly 0, so the gradient through it vanishes and it stops learning (and a saturated sigmoid "
            "output rounds to exactly 0 or 1). The output layer of a bce / cross_entropy model is not watched: "
            "there the loss's derivative cancels the flat region."
        ),
        causes=[
            "unnormalized inputs (x in [0, 100) puts z in the hundreds)",
            "weights initialised too large for the fan-in (N(0, 1) on a wide layer)",
            "a learning rate large enough to throw the weights far out",
        ],
        fixes=[
            "data.normalize: standardize",
            "model.init: xavier_normal",
            "a lower optimizer.lr",
            "model.activation: relu",
        ],
        references=[
            "LeCun, Bottou, Orr & Müller 1998, Efficient BackProp §4.4 (sigmoid saturation)",
            "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks",
            "SageMaker Debugger SaturatedActivation rule: threshold_layer 50%, bands (-23, 17) sigmoid, "
            "(-9.4999, 9.4999) tanh",
        ],
    )

    def watched(self, spec: dict) -> bool:
        activation = str(spec.get("activation"))
        if activation not in SQUASHING:
            return False
        kind = str(((self.context.start or {}).get("loss") or {}).get("kind") or "mse")
        return not (spec.get("is_output") and kind in ("bce", "cross_entropy"))

    def measure(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        fraction = stat(layer, "z", "sat_frac")
        if fraction is None:
            return None
        return {"holds": fraction >= self.t["fraction"], "fraction": fraction,
                "z_min": stat(layer, "z", "min"), "z_max": stat(layer, "z", "max")}

    def holding(self, watch: _LayerWatch, layer: dict) -> Optional[dict[str, Any]]:
        z = layer.get("z")
        fraction = finite(z.get("sat_frac")) if type(z) is dict else None  # stat(layer, "z", "sat_frac")
        if fraction is None or not fraction >= self._fraction:
            return None
        return self.measure(watch, layer)

    def _band(self, activation: str) -> tuple[float, float]:
        if activation == "sigmoid":
            return self.t["sigmoid_min"], self.t["sigmoid_max"]
        return -self.t["tanh_band"], self.t["tanh_band"]

    def report(self, watch: _LayerWatch, facts: RunFacts, span: str, to_end: bool) -> Finding:
        first = watch.at_first or watch.peak or {}
        peak = watch.peak or first
        flat = FLAT_REGION[watch.activation]
        lo, hi = self._band(watch.activation)
        z_min, z_max = peak.get("z_min"), peak.get("z_max")
        beyond = [f"z reached {fmt(v)}, beyond {fmt(edge)}" for v, edge, past in
                  ((z_min, lo, z_min is not None and z_min < lo), (z_max, hi, z_max is not None and z_max > hi))
                  if past]
        band = (f" ({'; '.join(beyond)} of the ({fmt(lo)}, {fmt(hi)}) band where the derivative is ~1e-7)"
                if beyond else "")
        message = (
            f"{pct(first.get('fraction'))} of {watch.name}'s {watch.activation} inputs have |z| > {fmt(flat)}, where "
            f"the derivative is below 1% of its maximum, {span}; up to {pct(peak.get('fraction'))} at step "
            f"{peak.get('step')} with z in [{fmt(z_min)}, {fmt(z_max)}]{band}."
        )
        fix_list = fixes(facts, "normalize")
        if facts.init not in ("xavier_normal", "xavier_uniform", "lecun_normal"):
            fix_list.append(f"model.init: xavier_normal  — weights scaled to fan-in keep z near 0 (now {facts.init})")
        fix_list.append(f"optimizer.lr: {yaml_number(facts.lr / 10)}  — smaller steps keep the weights from being "
                        "thrown into the flat region")
        if not watch.is_output:
            fix_list.append("model.activation: relu  — no flat region for z > 0")
        evidence = {"fraction_first": first.get("fraction"), "fraction_peak": peak.get("fraction"),
                    "peak_step": peak.get("step"), "z_min": z_min, "z_max": z_max, "band": [lo, hi],
                    "flat_beyond": flat, "first": watch.persist.first, "last": watch.persist.last,
                    "records": watch.persist.held, "records_seen": watch.persist.seen, "to_end": to_end,
                    "fraction_threshold": self.t["fraction"]}
        return self.finding(step=watch.persist.first, layer=watch.name, message=message, evidence=clean(evidence),
                            fixes=fix_list)

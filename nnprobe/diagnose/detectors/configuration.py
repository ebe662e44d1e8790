"""Set-up problems: inputs far from unit scale (start record) and a weight init that ignores fan-in (step 0)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from nnprobe.nn.activations import ACTIVATIONS
from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    RunFacts, clean, fmt, input_problems, record_layers, stat, step_of, target_problem,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding

SHOWN_FEATURES = 5


@register
class UnnormalizedInputs(Detector):
    code = "unnormalized-inputs"
    severity = "warning"
    summary = "Input features (or regression targets) far from zero mean / unit scale."
    thresholds = {
        "max_scale": Threshold(
            10,
            "a feature whose magnitude sqrt(mean^2 + std^2) exceeds this is off-scale (>): an order of magnitude "
            "beyond the unit scale that LeCun et al. 1998 (Efficient BackProp §4.3) recommend and that the "
            "fan-in init rules assume; also applied to regression targets",
        ),
        "max_offset": Threshold(
            3,
            "a feature whose |mean| exceeds this many standard deviations is off-centre (>): nearly every example "
            "has the same sign, so first-layer updates all move together (LeCun et al. 1998 §4.3)",
        ),
        "min_std": Threshold(
            0.01,
            "a feature with std below this is nearly constant (<): two orders under unit scale, its weights learn "
            "100x slower than the others'",
        ),
    }
    explanation = Explanation(
        meaning=(
            "The network's initial weights are scaled for inputs of zero mean and unit variance. Features in the "
            "tens or hundreds make the first layer's pre-activations and gradients that many times larger, so a "
            "learning rate that suits one feature explodes on another; features that all share one sign make the "
            "updates of a unit's weights share one sign too (zig-zagging). Regression targets on a large scale do "
            "the same to the output layer's error."
        ),
        causes=[
            "raw measurements or integer ids fed unscaled (x in [0, 100))",
            "features of very different units side by side",
            "regression targets in the hundreds with an mse loss",
        ],
        fixes=[
            "data.normalize: standardize (or minmax)",
            "data.normalize_target: standardize for regression",
        ],
        references=[
            "LeCun, Bottou, Orr & Müller 1998, Efficient BackProp §4.3: shift inputs to zero mean, scale to equal "
            "(unit) covariance",
            "Wardat et al. 2022, DeepDiagnosis (ICSE): checks input data ranges before training",
        ],
    )

    def static(self) -> list[Finding]:
        data = (self.context.start or {}).get("data") or {}
        limits = {"max_scale": self.t["max_scale"], "max_offset": self.t["max_offset"], "min_std": self.t["min_std"]}
        bad = input_problems(data, **limits)
        target = target_problem(data, max_scale=self.t["max_scale"], max_offset=self.t["max_offset"])
        if not bad and target is None:
            return []
        n_features = len(data.get("input_mean") or [])
        parts = []
        if bad:
            shown = "; ".join(
                f"feature {b['feature']} spans [{fmt(b['min'])}, {fmt(b['max'])}] (mean {fmt(b['mean'])}, "
                f"std {fmt(b['std'])}: {', '.join(b['reasons'])})" for b in bad[:SHOWN_FEATURES])
            more = f" and {len(bad) - SHOWN_FEATURES} more" if len(bad) > SHOWN_FEATURES else ""
            parts.append(f"{len(bad)} of {n_features} input features are far from zero mean / unit scale: "
                         f"{shown}{more}")
        if target is not None:
            parts.append(f"regression targets span [{fmt(target['min'])}, {fmt(target['max'])}] (mean "
                         f"{fmt(target['mean'])}, std {fmt(target['std'])}: {', '.join(target['reasons'])})")
        fix_list = []
        if bad:
            lo = min((b["min"] for b in bad if b["min"] is not None), default=None)
            hi = max((b["max"] for b in bad if b["max"] is not None), default=None)
            constant = [b["feature"] for b in bad if b["std"] == 0]
            fix_list.append(f"data.normalize: standardize  — inputs span [{fmt(lo)}, {fmt(hi)}]")
            if constant:
                fix_list.append(f"data: drop feature(s) {', '.join(map(str, constant[:SHOWN_FEATURES]))}  — "
                                "constant, they carry no information")
        if target is not None:
            fix_list.append(f"data.normalize_target: standardize  — targets span [{fmt(target['min'])}, "
                            f"{fmt(target['max'])}]")
        evidence = {"n_features": n_features, "n_bad": len(bad), "features": bad[:SHOWN_FEATURES], "target": target,
                    **limits}
        return [self.finding(step=None, layer=None, message="; ".join(parts) + ".", evidence=clean(evidence),
                             fixes=fix_list)]


# The fan-in rule each activation is initialised by: (rule name, expected weight std from fan_in, fan_out).
InitRule = tuple[str, Callable[[int, int], float]]
_HE: InitRule = ("He sqrt(2/fan_in)", lambda fan_in, fan_out: math.sqrt(2.0 / fan_in))
_XAVIER: InitRule = ("Xavier sqrt(2/(fan_in+fan_out))", lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)))
_LECUN: InitRule = ("LeCun sqrt(1/fan_in)", lambda fan_in, fan_out: math.sqrt(1.0 / fan_in))
_BY_TRAIT = {"he": _HE, "xavier": _XAVIER, "lecun": _LECUN}
#: each built-in activation's rule, as its traits declare it (an activation without one, user code, is judged
#: against the band of every standard rule instead)
INIT_RULES: dict[str, InitRule] = {name: _BY_TRAIT[cls.traits.init_rule] for name, cls in ACTIVATIONS.items()}
# Every standard fan-in rule: a scale between the smallest and the largest of them (times the
# tolerance) is a defensible init for any activation; outside that band it is far off.
STANDARD_RULES = (_HE, _XAVIER, _LECUN)


@register
class PoorInit(Detector):
    code = "poor-init"
    severity = "warning"
    summary = "Initial weight scale far from the fan-in rule for the activation, or all weights of one sign."
    thresholds = {
        "scale_ratio": Threshold(
            3,
            "a layer's weight RMS more than this factor above the largest or below the smallest of the standard "
            "fan-in rules (He sqrt(2/fan_in), Xavier sqrt(2/(fan_in+fan_out)), LeCun sqrt(1/fan_in)) is off (>): "
            "a factor r per layer compounds to r^depth in activation scale (Glorot & Bengio 2010; He et al. 2015), "
            "while choosing one standard rule over another is not a pathology",
        ),
        "min_weights": Threshold(
            6,
            "weights needed before sign and scale are judged (>=): all-one-sign is counted over all the layers "
            "that share one sign, and a zero-mean init gives 6 weights of one sign with probability 2^-5 = 3%",
        ),
    }
    explanation = Explanation(
        meaning=(
            "Fan-in initialisation draws zero-mean weights with a standard deviation chosen so that each layer keeps "
            "the scale of its input: sqrt(2/fan_in) for the ReLU family (He), sqrt(2/(fan_in+fan_out)) for "
            "sigmoid/tanh/identity (Xavier). Far larger weights blow activations and gradients up layer by layer; "
            "far smaller ones shrink them; weights that are all positive (np.random.rand, U[0, 1)) make every unit "
            "of a layer start as nearly the same increasing function of the inputs and push the whole layer the "
            "same way."
        ),
        causes=[
            "np.random.rand (U[0, 1)) or N(0, 1) weights copied from a tutorial (model.init: uniform / normal)",
            "a He/Xavier init with a large model.init_scale",
            "all-zero weights: every unit computes the same thing forever",
        ],
        fixes=[
            "model.init: he_normal for relu / leaky_relu",
            "model.init: xavier_normal for sigmoid / tanh",
            "model.init_scale: 1.0",
            "model.bias_init: zeros",
        ],
        references=[
            "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks",
            "He, Zhang, Ren & Sun 2015, Delving Deep into Rectifiers (He initialisation)",
            "LeCun, Bottou, Orr & Müller 1998, Efficient BackProp §4.6",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.result: Optional[list[dict[str, Any]]] = None
        self.checked_step: Optional[int] = None

    def observe(self, record: dict) -> None:
        if self.result is not None:
            return
        layers = record_layers(record)
        if not layers:
            return
        self.checked_step = step_of(record)
        specs = {str(s.get("name")): s for s in (self.context.start or {}).get("layers") or []}
        rows = [self._row(specs.get(str(l.get("name"))) or {}, l) for l in layers]
        self._one_sign(rows)
        self.result = [r for r in rows if r["problems"]]
        if self.result:
            self.first_step = self.checked_step

    def _row(self, spec: dict, layer: dict) -> dict[str, Any]:
        fan_in, units = int(spec.get("fan_in") or 0), int(spec.get("units") or 0)
        count = fan_in * units
        activation = str(spec.get("activation") or "")
        norm, std, mean = stat(layer, "W", "norm"), stat(layer, "W", "std"), stat(layer, "W", "mean")
        rms = norm / math.sqrt(count) if norm is not None and count > 0 else None
        rule = INIT_RULES.get(activation)
        expected = rule[1](fan_in, units) if rule and fan_in > 0 else None
        row = {"layer": str(layer.get("name")), "activation": activation, "fan_in": fan_in, "units": units,
               "count": count, "rms": rms, "std": std, "mean": mean, "pos_frac": stat(layer, "W", "pos_frac"),
               "b_mean": stat(layer, "b", "mean"), "rule": rule[0] if rule else None, "expected": expected,
               "ratio": rms / expected if rms is not None and expected else None, "problems": []}
        if norm == 0:
            row["problems"].append(f"all {count} weights are 0: every unit computes the same function and gets the "
                                   "same update, so the symmetry is never broken")
        elif std == 0 and count > 1:
            row["problems"].append(f"all {count} weights are equal ({fmt(mean)}): the units stay identical")
        elif rms is not None and fan_in > 0 and count >= self.t["min_weights"]:
            limit = self.t["scale_ratio"]
            stds = [std_of(fan_in, units) for _, std_of in STANDARD_RULES]
            row["band"] = [min(stds) / limit, max(stds) * limit]
            if row["band"][0] <= rms <= row["band"][1]:
                pass
            elif row["ratio"] is not None:
                r = row["ratio"]
                row["problems"].append(
                    f"weight RMS {fmt(rms)} is {fmt(r)}x the {rule[0]} = {fmt(expected)} rule for {activation}: "
                    + ("activations and gradients grow" if r > 1 else "activations and gradients shrink")
                    + f" about {fmt(max(r, 1 / r))}x per layer")
            else:  # no declared rule (user code): judged against every standard rule, never skipped
                edge = row["band"][1] / limit if rms > row["band"][1] else row["band"][0] * limit
                r = rms / edge
                row["problems"].append(
                    f"weight RMS {fmt(rms)} is {fmt(r)}x the nearest standard fan-in rule ({fmt(edge)}) for "
                    f"{activation}, whose own rule nnprobe does not know: "
                    + ("activations and gradients grow" if r > 1 else "activations and gradients shrink")
                    + f" about {fmt(max(r, 1 / r))}x per layer")
        return row

    def _one_sign(self, rows: list[dict[str, Any]]) -> None:
        """Layers whose weights all share one sign, judged together when they share the same sign."""
        for sign, frac, word in ((1, 1.0, "positive"), (-1, 0.0, "negative")):
            group = [r for r in rows if r["pos_frac"] == frac and r["count"] > 1 and (r["mean"] or 0) * sign > 0]
            total = sum(r["count"] for r in group)
            if total < self.t["min_weights"]:
                continue
            for r in group:
                also = (f", as are all {total} weights of " + ", ".join(g["layer"] for g in group)
                        if len(group) > 1 else "")
                r["problems"].append(
                    f"all {r['count']} weights are {word} (mean {fmt(r['mean'])}, std {fmt(r['std'])}){also}: the "
                    "init is not zero-centred, so the layer's units start alike and are pushed the same way")

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if not self.result:
            return []
        facts = RunFacts.of(self.context)
        out = []
        for row in self.result:
            message = (f"{row['layer']} at initialisation (step {self.checked_step}): " + "; ".join(row["problems"])
                       + (f". Biases start at mean {fmt(row['b_mean'])}" if row["b_mean"] else "") + ".")
            init = facts.init_for(facts.activation)
            fix_list = [f"model.init: {init}  — zero-mean weights scaled to fan-in (for {row['layer']}: std "
                        f"{row['rule'] or 'by its fan-in'}"
                        + (f" = {fmt(row['expected'])})" if row["expected"] else ")")]
            scale = getattr(getattr(self.context.config, "model", None), "init_scale", 1.0)
            if scale not in (1, 1.0, None):
                fix_list.append(f"model.init_scale: 1.0  — now {fmt(float(scale))}")
            if row["b_mean"] and facts.bias_init not in ("zeros", 0, 0.0):
                fix_list.append(f"model.bias_init: zeros  — biases start at mean {fmt(row['b_mean'])}")
            evidence = {k: v for k, v in row.items() if k != "problems"}
            evidence["step"] = self.checked_step
            out.append(self.finding(step=self.checked_step, layer=row["layer"], message=message,
                                    evidence=clean(evidence), fixes=fix_list))
        return out

"""Static check: does the output activation produce what the loss expects?"""

from __future__ import annotations

import math
from typing import Optional

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import PROBABILITY_OUTPUT, clean, finite, fmt
from nnprobe.diagnose.detectors.base import Detector, Explanation
from nnprobe.findings import Finding

# Why each (loss kind, output) pair of the cross-entropy family is wrong; pairs not listed fit.
PROBABILITY_MISMATCH = {
    ("bce", "relu"): "ReLU outputs lie in [0, inf): a = 0 gives log(0) = -inf, a >= 1 gives log(1 - a) of zero or "
                     "a negative number, and the gradient's 1/(1 - a) is undefined at a = 1",
    ("bce", "identity"): "identity outputs are unbounded: any a <= 0 or a >= 1 puts zero or a negative number "
                         "into a log",
    ("bce", "tanh"): "tanh outputs lie in (-1, 1): every negative output goes into log(a)",
    ("bce", "softmax"): "softmax outputs are coupled (they sum to 1) while BCE scores each one as an independent "
                        "yes/no probability; the two disagree about what the outputs mean",
    ("cross_entropy", "relu"): "ReLU outputs are not a probability distribution: they do not sum to 1 and a = 0 "
                               "gives log(0) = -inf",
    ("cross_entropy", "identity"): "identity outputs are not a probability distribution: they can be negative "
                                   "(log of a negative number is NaN) and do not sum to 1",
    ("cross_entropy", "tanh"): "tanh outputs lie in (-1, 1) and do not sum to 1: negative outputs go into log(a)",
    ("cross_entropy", "sigmoid"): "sigmoid outputs do not sum to 1: -log(a_true) only pushes the true class up and "
                                  "nothing pushes the other classes down",
}

# The config changes that fix each pair (the matching output, or the matching loss for a softmax output).
PROBABILITY_FIX = {
    ("bce", "softmax"): ["loss.kind: cross_entropy  — the loss that matches a softmax output",
                         "loss.from_logits: true  — log-softmax of the pre-activation, never log(0)"],
}

# Range of each output activation, for regression targets (mse).
OUTPUT_RANGE = {
    "sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "softmax": (0.0, 1.0),
    "identity": (-math.inf, math.inf),
}


@register
class OutputLossMismatch(Detector):
    code = "output-loss-mismatch"
    severity = "error"
    summary = "Static: the output activation and the loss do not fit (ReLU/identity into cross-entropy, ...)."
    thresholds = {}
    explanation = Explanation(
        meaning=(
            "BCE and cross-entropy take the log of probabilities: BCE wants one sigmoid per yes/no output, "
            "cross-entropy a softmax over the classes. Any other output activation feeds them numbers that are not "
            "probabilities (log of 0 or of a negative number, outputs that do not sum to 1), and softmax into BCE "
            "mixes two incompatible readings of the outputs. For mse, the output's range must contain the "
            "targets: a sigmoid cannot output 100, and softmax over a single unit is the constant 1."
        ),
        causes=[
            "a ReLU or identity output kept from a regression net while switching to classification",
            "the BCE formula copied onto a softmax output",
            "a sigmoid output used with multi-class cross-entropy",
            "a bounded output (sigmoid, tanh, softmax, relu) for regression targets outside its range",
        ],
        fixes=[
            "bce: model.output: sigmoid, loss.from_logits: true",
            "cross_entropy: model.output: softmax, loss.from_logits: true",
            "softmax output: loss.kind: cross_entropy",
            "regression: model.output: identity",
        ],
        references=[
            "Bishop 2006, Pattern Recognition and Machine Learning §5.2: the canonical output activation for each "
            "error function (identity/sum-of-squares, sigmoid/cross-entropy, softmax/multiclass cross-entropy)",
            "Goodfellow, Bengio & Courville 2016, Deep Learning §6.2.2",
        ],
    )

    def static(self) -> list[Finding]:
        start = self.context.start or {}
        layers = start.get("layers") or []
        if not layers:
            return []
        out = layers[-1]
        output, units = str(out.get("activation")), int(out.get("units") or 1)
        loss = start.get("loss") or {}
        kind = str(loss.get("kind") or "mse")
        from_logits = bool(loss.get("from_logits"))
        finding = (self._probability(kind, output, from_logits, out["name"], units) if kind in PROBABILITY_OUTPUT
                   else self._regression(output, units, start.get("data") or {}, out["name"]))
        return [finding] if finding else []

    def _probability(self, kind: str, output: str, from_logits: bool, layer: str, units: int) -> Optional[Finding]:
        reason = PROBABILITY_MISMATCH.get((kind, output))
        if reason is None:
            return None
        want = PROBABILITY_OUTPUT[kind]
        message = f"model.output {output} into loss.kind {kind}: {reason}."
        if output == "softmax" and units == 1:
            message += " Over a single output unit softmax is the constant 1.0: the net cannot learn at all."
        if from_logits:
            message += (f" With loss.from_logits: true the loss applies log-{want} to the pre-activation, so the "
                        f"{output} output the net predicts with is not what it was trained on.")
        fix_list = PROBABILITY_FIX.get((kind, output)) or [
            f"model.output: {want}  — the output {kind} expects",
            f"loss.from_logits: true  — log-{want} of the pre-activation, never log(0)",
        ]
        evidence = {"output": output, "loss_kind": kind, "from_logits": from_logits, "expected_output": want}
        return self.finding(step=None, layer=layer, message=message, evidence=evidence, fixes=fix_list)

    def _regression(self, output: str, units: int, data: dict, layer: str) -> Optional[Finding]:
        lo_t, hi_t = finite(data.get("target_min")), finite(data.get("target_max"))
        evidence = {"output": output, "loss_kind": "mse", "units": units, "target_min": lo_t, "target_max": hi_t}
        if output == "softmax" and units == 1:
            message = ("model.output softmax over a single output unit is the constant 1.0 whatever the input: "
                       "the net cannot fit any target and every gradient through it is 0.")
            return self.finding(step=None, layer=layer, message=message, evidence=clean(evidence),
                                fixes=["model.output: identity  — the output for regression"])
        rng = OUTPUT_RANGE.get(output)
        if rng is None or lo_t is None or hi_t is None:
            return None
        lo, hi = rng
        if lo <= lo_t and hi_t <= hi:
            return None
        evidence.update(output_min=clean(lo), output_max=clean(hi))
        message = (f"model.output {output} can only produce values in [{fmt(lo)}, {fmt(hi)}] but the regression "
                   f"targets span [{fmt(lo_t)}, {fmt(hi_t)}]: the targets outside that range can never be fitted "
                   f"and the output saturates chasing them.")
        return self.finding(step=None, layer=layer, message=message, evidence=clean(evidence),
                            fixes=[f"model.output: identity  — targets span [{fmt(lo_t)}, {fmt(hi_t)}]"])

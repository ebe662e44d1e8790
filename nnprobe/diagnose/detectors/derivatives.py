"""gradient-mismatch: its finite-difference findings come from `nnprobe gradcheck`; from records, the one
sign a hand-written loop leaves: a forward tensor written into before the step ended (nnprobe.Recorder)."""

from __future__ import annotations

from typing import Any, Optional

from nnprobe.diagnose.detectors._common import layer_key, record_layers, step_of
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold, register
from nnprobe.findings import Finding

_TENSOR_WORDS = {"z": "pre-activation z", "a": "activation a"}


@register
class GradientMismatch(Detector):
    code = "gradient-mismatch"
    severity = "error"
    summary = "gradcheck: backprop and finite differences disagree (a wrong derivative)."
    thresholds = {
        "max_rel_error": Threshold(
            1e-4,
            "relative error |analytic - numeric| / max(|analytic|, |numeric|) above which a gradient entry is "
            "wrong (>); CS231n: above 1e-4 is suspect and 1e-2 almost certainly a bug, while ReLU kinks can push "
            "a correct float64 gradient up to ~1e-4 but not beyond",
        ),
    }
    explanation = Explanation(
        meaning=(
            "nnprobe gradcheck compares the gradient backpropagation computes with central finite differences "
            "(f(w + h) - f(w - h)) / 2h, entry by entry. A relative error above the threshold means the backward "
            "pass does not compute the derivative of the forward pass: usually a hand-written activation "
            "derivative that is wrong (a reluGrad that overwrites its input, sigmoid' written as 1 - sigmoid). "
            "A run recorded from a hand-written loop (nnprobe.Recorder) cannot be checked this way, since nnprobe "
            "does not run its backward pass; there it reports the sign such a derivative leaves: a pre-activation "
            "or activation that changed between being handed over and the end of the step."
        ),
        causes=[
            "a user activation whose `derivative` is not the derivative of its `forward`",
            "a derivative evaluated on the activation instead of the pre-activation (or the other way round)",
            "a derivative function that modifies its argument in place",
        ],
        fixes=[
            "correct the user activation's derivative (nnprobe gradcheck names the layer and the worst entry)",
            "model.activation: a built-in activation, to confirm the rest of the network is right",
        ],
        references=[
            "CS231n, Neural Networks Part 3: gradient checks (centered formula, relative error thresholds)",
            "Goodfellow, Bengio & Courville 2016, Deep Learning §11.5 (numerical gradient checking)",
        ],
    )

    #: its records-driven check sees only what nnprobe.Recorder records (train owns its backward pass)
    recorded_runs_only = True

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.changed: dict[str, dict[str, Any]] = {}  # layer -> first step, tensors, and how many records showed it

    def observe(self, record: dict[str, Any]) -> None:
        for layer in record_layers(record):
            tensors = layer.get("changed_after_forward")
            if not tensors:
                continue
            seen = self.changed.get(layer_key(layer))
            if seen is None:
                step = step_of(record)
                self.changed[layer_key(layer)] = {"step": step, "tensors": [str(t) for t in tensors], "records": 1}
                if self.first_step is None:
                    self.first_step = step
            else:
                seen["records"] += 1

    def finish(self, end: Optional[dict[str, Any]]) -> list[Finding]:
        out = []
        for layer, seen in self.changed.items():
            what = " and ".join(_TENSOR_WORDS.get(t, t) for t in seen["tensors"])
            out.append(self.finding(
                step=seen["step"], layer=layer,
                message=(f"{layer}'s {what} changed between s.layer() and the end of step {seen['step']} "
                         f"({seen['records']} recorded steps showed it): the loop wrote into a forward tensor after the "
                         "forward pass, as a derivative function that modifies its argument in place does "
                         "(reluGrad setting arg[i][j] = 1). Whatever reads it afterwards, the backward pass included, "
                         "gets the overwritten values, not the forward pass's."),
                evidence={"tensors": seen["tensors"], "records": seen["records"], "check": "in-place write"},
                fixes=["make the derivative return a new array and leave its argument alone: "
                       "`return (z > 0).astype(z.dtype)` instead of writing 0 and 1 into z",
                       "`nnprobe gradcheck` on a YAML twin of the network compares the derivative with finite "
                       "differences"],
            ))
        return out

"""gradient-mismatch: the registry entry and explanation; its findings come from `nnprobe gradcheck`, not records."""

from __future__ import annotations

from typing import Any, Optional

from nnprobe.detectors import register
from nnprobe.detectors._common import clean, fmt
from nnprobe.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding


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
            "derivative that is wrong (a reluGrad that overwrites its input, sigmoid' written as 1 - sigmoid)."
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

    def report(self, *, layer: Optional[str], tensor: str, rel_error: float, analytic: float, numeric: float,
               index: Any = None, n_bad: int = 1, n_checked: int = 1) -> Finding:
        """The finding gradcheck emits for one layer: its worst entry and how many entries disagreed."""
        at = f" at index {index}" if index is not None else ""
        message = (
            f"{tensor} of {layer or 'the network'}: backprop gives {fmt(analytic)} but finite differences give "
            f"{fmt(numeric)}{at}, a relative error of {fmt(rel_error)} (> {fmt(self.t['max_rel_error'])}); "
            f"{n_bad} of {n_checked} checked entries disagree."
        )
        evidence = {"tensor": tensor, "rel_error": rel_error, "analytic": analytic, "numeric": numeric,
                    "index": index, "n_bad": n_bad, "n_checked": n_checked,
                    "max_rel_error": self.t["max_rel_error"]}
        return self.finding(step=None, layer=layer, message=message, evidence=clean(evidence),
                            fixes=["the activation's derivative: make it the derivative of its forward function, "
                                   "evaluated at the pre-activation"])

"""gradient-mismatch: the registry entry and explanation; its findings come from `nnprobe gradcheck`, not records."""

from __future__ import annotations

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold


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

"""Losses in the two forms people write: the textbook formula on the output activation, and the fused one.

`from_logits: false` evaluates the formula exactly as hand-written code has it, on the output
activation `a`, with `epsilon` inside each log, and differentiates that expression analytically
(so 0 * log(0) = NaN and 0/0 = NaN happen here exactly when they happen there).
`from_logits: true` works on the output layer's pre-activation `z`: log-sigmoid (bce) or
log-softmax (cross_entropy), which cannot produce log(0); the output activation is then used
only for predictions.

Per-example loss sums over the output units; `reduction` then takes the mean or the sum
over the batch. The L2 term, l2/2 * sum of squared weights (biases excluded), is added by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnprobe.nn.activations import Activation, Sigmoid, Softmax


@dataclass
class LossOutput:
    value: float
    grad_z: np.ndarray  # dL/dz of the output layer
    #: what the textbook cross-entropy family took the log of (the output activation, before epsilon),
    #: else None: the probes count its zeros and ones (`loss_in` in the step record)
    log_input: Optional[np.ndarray]


def one_hot(labels: np.ndarray, n: int, dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], n), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


class Loss:
    """Computes the loss and dL/dz of the output layer from (z, a, targets)."""

    def __init__(self, kind: str, *, reduction: str = "mean", from_logits: bool = False,
                 epsilon: float = 0.0, output: Activation) -> None:
        self.kind = kind
        self.reduction = reduction
        self.from_logits = from_logits
        self.epsilon = float(epsilon)
        self.output = output

    def targets(self, y: np.ndarray, units: int, dtype) -> np.ndarray:
        """Targets in the layout the formulas use: labels become one-hot (or a 0/1 column)."""
        if self.kind == "mse":
            return y.astype(dtype, copy=False)
        if units == 1:
            return y.reshape(-1, 1).astype(dtype)
        return one_hot(y, units, dtype)

    @property
    def two_sided(self) -> bool:
        """Whether the log is also taken of 1 - p (binary cross-entropy)."""
        return self.kind == "bce"

    def __call__(self, z: np.ndarray, a: np.ndarray, t: np.ndarray) -> LossOutput:
        scale = 1.0 / z.shape[0] if self.reduction == "mean" else 1.0
        if self.kind == "mse":
            diff = a - t
            flat = diff.ravel().astype(np.float64, copy=False)
            value = float(np.dot(flat, flat)) * scale
            return LossOutput(value, self.output.vjp(z, a, (2 * scale) * diff), None)
        if self.from_logits:
            return self._from_logits(z, a, t, scale)
        return self._textbook(z, a, t, scale)

    def _from_logits(self, z, a, t, scale) -> LossOutput:
        """`a` is reused as sigmoid(z) / softmax(z) when the output activation already is that link."""
        if self.kind == "bce":
            # log(1 + e^z) - t z, computed as softplus(z) - t z; dL/dz = sigmoid(z) - t
            per = np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - t * z
            grad = (a if type(self.output) is Sigmoid else Sigmoid().forward(z)) - t
        else:
            # logsumexp(z) - sum(t z); dL/dz = softmax(z) - t
            m = z.max(axis=1, keepdims=True)
            lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
            per = lse * t.sum(axis=1, keepdims=True) - (t * z).sum(axis=1, keepdims=True)
            probs = a if type(self.output) is Softmax else Softmax().forward(z)
            grad = probs * t.sum(axis=1, keepdims=True) - t
        return LossOutput(float(per.sum(dtype=np.float64)) * scale, grad * scale, None)

    def _textbook(self, z, a, t, scale) -> LossOutput:
        eps = self.epsilon
        if self.kind == "bce":
            # -(t log(a + eps) + (1 - t) log(1 - a + eps))
            per = -(t * np.log(a + eps) + (1 - t) * np.log(1 - a + eps))
            grad_a = -(t / (a + eps) - (1 - t) / (1 - a + eps))
        else:
            # -sum(t log(a + eps))
            per = -(t * np.log(a + eps))
            grad_a = -(t / (a + eps))
        value = float(per.sum(dtype=np.float64)) * scale
        return LossOutput(value, self.output.vjp(z, a, grad_a * scale), a)

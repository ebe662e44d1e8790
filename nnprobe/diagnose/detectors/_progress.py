"""Where a run's loss stands against two levels it can be stuck at: its first value and chance.

A loss that stopped falling near the noise floor of its data has converged; a loss that never
left its first value, or sits at the loss of guessing, is stuck. Detectors that judge "not
converging" (loss-plateau, the ratio rule of exploding-gradients) ask this module which it is.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from nnprobe.diagnose.detectors._common import finite, fmt


def _entropy(p: float) -> float:
    """Binary entropy in nats: the BCE of always predicting p on labels that are 1 with probability p."""
    return -(p * math.log(p) + (1.0 - p) * math.log(1.0 - p))


def chance_loss(start: dict[str, Any]) -> Optional[float]:
    """The loss of the best constant prediction, reduced as the run reduces it (None when unknown).

    Classes are taken as balanced (the start record has their number, not their frequencies):
    cross-entropy ln K, BCE ln 2 for one output unit and K·H(1/K) one-vs-rest; mse on regression
    targets their variance. Balanced is the upper end: skewed classes have a lower chance loss.
    """
    loss = start.get("loss") or {}
    data = start.get("data") or {}
    layers = start.get("layers") or []
    kind = loss.get("kind")
    classes = data.get("n_classes")
    units = int(layers[-1].get("units") or 0) if layers and isinstance(layers[-1], dict) else 0
    per_example: Optional[float] = None
    if kind == "cross_entropy" and isinstance(classes, int) and classes >= 2:
        per_example = math.log(classes)
    elif kind == "bce" and isinstance(classes, int) and classes >= 2:
        per_example = _entropy(0.5) if units == 1 else classes * _entropy(1.0 / classes)
    elif kind == "mse" and units == 1:
        std = finite(data.get("target_std"))
        per_example = std * std if std is not None else None
    if per_example is None:
        return None
    if loss.get("reduction") == "sum":
        batch = start.get("batch_size") or data.get("n_train")
        if not isinstance(batch, int) or batch <= 0:
            return None
        per_example *= batch
    return per_example


class LossLevel:
    """The first finite loss and the chance-level loss of a run, and whether a level is still at either."""

    __slots__ = ("first", "chance")

    def __init__(self, start: dict[str, Any]) -> None:
        self.first: Optional[float] = None
        self.chance = chance_loss(start or {})

    def update(self, loss: Optional[float]) -> None:
        if self.first is None and loss is not None:
            self.first = loss

    @property
    def reference(self) -> Optional[float]:
        """The lower of the first loss and the chance-level loss: a level above `fraction` of it is stuck."""
        levels = [x for x in (self.first, self.chance) if x is not None and x > 0]
        return min(levels) if levels else None

    def stuck(self, level: Optional[float], fraction: float) -> bool:
        """Whether `level` never got below `fraction` of the first loss or of the chance-level loss."""
        ref = self.reference
        return level is not None and ref is not None and level >= fraction * ref

    def describe(self, level: float) -> str:
        """'0.69, 100% of the chance-level loss 0.693 (first loss 0.71)'."""
        parts = []
        if self.chance is not None and self.chance > 0:
            parts.append(f"{100 * level / self.chance:.0f}% of the chance-level loss {fmt(self.chance)}")
        if self.first is not None and self.first > 0:
            parts.append(f"{100 * level / self.first:.0f}% of the first loss {fmt(self.first)}")
        return f"{fmt(level)} ({', '.join(parts)})" if parts else fmt(level)

    def evidence(self) -> dict[str, Optional[float]]:
        return {"first_loss": self.first, "chance_loss": self.chance}

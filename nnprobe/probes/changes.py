"""What happens to a tensor after a hand-written loop hands it over: written into, or updated.

nnprobe.Recorder summarises each tensor when the loop hands it over (probes.records). Two things
only the end of the step shows: a forward tensor the loop wrote into afterwards (a derivative
function that modifies its argument in place), and the update the optimizer applied to a weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnprobe.probes import statistics as probes


def as_float(arr: np.ndarray) -> np.ndarray:
    """Integer or boolean tensors are read as float64; float16/32/64 as they are."""
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


@dataclass(frozen=True)
class Fingerprint:
    """One dot product with position weights 1, 2, ..., 1024, 1, 2, ...: it changes when the entries are
    overwritten, permuted or negated (a 0/1 mask written over z, a sign flip), at the cost of one read."""

    weighted: float

    @classmethod
    def of(cls, arr: np.ndarray) -> "Fingerprint":
        flat = as_float(arr).reshape(-1)
        if flat.dtype == np.float16:  # a float16 dot product overflows at 65504
            flat = flat.astype(np.float32)
        return cls(float(np.dot(flat, _ramp(flat.size, flat.dtype))))

    def same(self, other: "Fingerprint") -> bool:
        x, y = self.weighted, other.weighted
        return x == y or (math.isnan(x) and math.isnan(y))


_ramps: dict[tuple[int, str], np.ndarray] = {}


def _ramp(n: int, dtype: np.dtype) -> np.ndarray:
    """1, 2, ..., 1024, 1, 2, ... (exact in float16 and up), cached per size."""
    key = (n, dtype.char)
    ramp = _ramps.get(key)
    if ramp is None:
        if len(_ramps) > 64:
            _ramps.clear()
        ramp = _ramps[key] = (np.arange(n) % 1024 + 1).astype(dtype)
    return ramp


class UpdateTracker:
    """A weight's value at one step, kept to measure the update applied to it: ||W_after - W_before||.

    A loop that updates in place (`W -= lr * dW`) shows the update by the end of the step; one that
    rebinds (`W = W - lr * dW`) hands the new array over at the next step. The copy and the
    difference go into two buffers allocated once and reused.
    """

    def __init__(self) -> None:
        self._before: Optional[np.ndarray] = None
        self._diff: Optional[np.ndarray] = None
        self._source: Optional[np.ndarray] = None  # the array handed over, to see an in-place update
        self.norm_before: Optional[float] = None  # ||W_before||, set by whoever took W's statistics
        self._measured = True  # nothing kept yet

    def keep(self, W: np.ndarray) -> None:
        if self._before is None or self._before.shape != W.shape or self._before.dtype != W.dtype:
            self._before = np.empty(W.shape, dtype=W.dtype)
            self._diff = np.empty(W.shape, dtype=W.dtype)
        np.copyto(self._before, W)
        self._source, self._measured = W, False

    def in_place(self) -> Optional[float]:
        """||W_after - W_before|| of the array handed over, if the step changed it; else None."""
        if self._measured:
            return None
        norm = self._measure(self._source)
        return norm if norm != 0.0 else None

    def rebound(self, W: np.ndarray) -> Optional[float]:
        """||W - W_before|| for a newly handed-over array (a loop that rebinds W); None if not one."""
        if self._measured or W is self._source or self._before.shape != W.shape:
            return None
        return self._measure(W)

    def _measure(self, W: np.ndarray) -> float:
        np.subtract(W, self._before, out=self._diff, casting="unsafe")
        sq = probes.sq_norm(self._diff)
        if sq != 0.0:
            self._measured = True  # the kept value's update is known; a later step keeps anew
        return math.sqrt(sq) if sq < math.inf else math.inf

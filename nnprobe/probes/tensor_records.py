"""The pieces of a step record made from tensors handed over one by one (the recorder's side of the probes).

`train` owns its model and plans each step's passes (loop.py); a hand-written loop hands its
tensors over in whatever layout it has them: any float dtype, views that are not contiguous,
1-D or 2-D biases. Everything here reads them through probes.statistics, so the numbers are the
ones `train` records for the same tensors, in the same record fields (docs/log-schema.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnprobe.nn.activations import HIDDEN, OUTPUT
from nnprobe.nn.losses import probability_stats
from nnprobe.probes import statistics as probes

#: activation name -> |z| beyond which it is flat (sigmoid, tanh), from the built-in activations' traits
SATURATION: dict[str, Optional[float]] = {name: cls.saturation for name, cls in {**HIDDEN, **OUTPUT}.items()}
SATURATION["leaky_relu"] = None


def as_float(arr: np.ndarray) -> np.ndarray:
    """Integer or boolean tensors are read as float64; float16/32/64 as they are."""
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


def forward(z: Optional[np.ndarray], a: Optional[np.ndarray], activation: Optional[str]) -> tuple[Optional[dict], Optional[dict]]:
    """The `z` and `a` objects of a layer record; either may be missing (then None)."""
    saturation = SATURATION.get(activation or "")
    if z is not None and a is not None:
        kind = "identity" if a is z else "other"  # the person's activation: no pass may assume its formula
        return probes.forward_stats(as_float(z), as_float(a), kind, saturation)
    if z is not None:
        z_stats, _ = probes.preactivation_stats(as_float(z), saturation)
        return z_stats, None
    if a is not None:
        a_stats = probes.activation_stats(as_float(a), 0)
        a_stats["dead"] = None  # units at z <= 0 for every example: needs z
        return None, a_stats
    return None, None


def gradient(g: Optional[np.ndarray], with_zero_frac: bool) -> tuple[Optional[dict], float]:
    """A gradient's record object and its sum of squares (0.0 when not given)."""
    if g is None:
        return None, 0.0
    return probes.gradient_stats_with_sq(as_float(g), with_zero_frac)


def weights(W: Optional[np.ndarray], distribution: bool) -> Optional[dict]:
    """W's record object: the whole distribution on the first step (what poor-init judges), else its norm."""
    if W is None:
        return None
    W = as_float(W)
    return probes.weight_stats(W) if distribution else probes.weight_norm_stats(W)


def bias(b: Optional[np.ndarray]) -> Optional[dict]:
    return None if b is None else probes.bias_stats(as_float(b))


def loss_inputs(outputs: Optional[np.ndarray], loss_kind: Optional[str]) -> Optional[dict]:
    """What the loss took the log of (`loss_in`), for the cross-entropy family; None otherwise."""
    if outputs is None or loss_kind not in ("bce", "cross_entropy") or outputs.size == 0:
        return None
    return probability_stats(as_float(outputs), 0.0, loss_kind == "bce")


def is_finite(arr: Optional[np.ndarray]) -> bool:
    return arr is None or probes.is_finite(as_float(arr))


@dataclass(frozen=True)
class Fingerprint:
    """Two dot products that change when a tensor is written to: its sum of squares, and its entries
    weighted by position (which a permutation or a sign flip of them also changes)."""

    squares: float
    weighted: float

    @classmethod
    def of(cls, arr: np.ndarray) -> "Fingerprint":
        flat = as_float(arr).reshape(-1)
        return cls(float(np.dot(flat, flat)), float(np.dot(flat, _ramp(flat.size, flat.dtype))))

    def same(self, other: "Fingerprint") -> bool:
        return _same(self.squares, other.squares) and _same(self.weighted, other.weighted)


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


_ramps: dict[tuple[int, str], np.ndarray] = {}


def _ramp(n: int, dtype: np.dtype) -> np.ndarray:
    """1, 2, ..., n repeating every 1024 (exact in float16 and up), cached per size."""
    key = (n, dtype.char)
    ramp = _ramps.get(key)
    if ramp is None:
        if len(_ramps) > 64:
            _ramps.clear()
        ramp = _ramps[key] = (np.arange(n) % 1024 + 1).astype(dtype)
    return ramp


class UpdateTracker:
    """A parameter's value at one step, kept to measure the update applied to it: ||W_new - W_old|| / ||W_old||.

    A loop that updates in place (`W -= lr * dW`) shows the update by the end of the step; one that
    rebinds (`W = W - lr * dW`) hands the new array over at the next step. The copy and the
    difference go into two buffers allocated on the first step and reused.
    """

    def __init__(self) -> None:
        self._before: Optional[np.ndarray] = None
        self._diff: Optional[np.ndarray] = None
        self._source: Optional[np.ndarray] = None  # the array handed over, to see an in-place update
        self._norm: Optional[float] = None
        self._measured = False  # the kept value's update was measured already

    def keep(self, W: np.ndarray, norm: Optional[float]) -> None:
        if self._before is None or self._before.shape != W.shape or self._before.dtype != W.dtype:
            self._before = np.empty(W.shape, dtype=W.dtype)
            self._diff = np.empty(W.shape, dtype=W.dtype)
        np.copyto(self._before, W)
        self._source, self._norm, self._measured = W, norm, False

    def in_place(self) -> Optional["Update"]:
        """The update the step made to the array it handed over, if it changed it; else None."""
        if self._source is None or self._measured:
            return None
        return self._measure(self._source, require_change=True)

    def rebound(self, W: np.ndarray) -> Optional["Update"]:
        """The update from the kept value to a newly handed-over array (a loop that rebinds W)."""
        if self._before is None or self._measured or W is self._source or self._before.shape != W.shape:
            return None
        return self._measure(W, require_change=False)

    def _measure(self, W: np.ndarray, require_change: bool) -> Optional["Update"]:
        np.subtract(W, self._before, out=self._diff, casting="unsafe")
        sq = probes.sq_norm(self._diff)
        if require_change and sq == 0.0:
            return None
        self._measured = True
        norm = math.sqrt(sq) if sq < math.inf else math.inf
        finite = sq < math.inf or probes.is_finite(as_float(W))
        return Update(norm / self._norm if self._norm else None, finite)


@dataclass(frozen=True)
class Update:
    ratio: Optional[float]  # ||W_after - W_before|| / ||W_before|| (None when W_before is all zero)
    finite: bool  # the parameter after the update


def sq_norm(arr: np.ndarray) -> float:
    return probes.sq_norm(as_float(arr))


def layer_size(shapes: dict[str, tuple]) -> dict[str, Optional[int]]:
    """fan_in and units of a layer from the shapes handed over: examples in rows, W as (fan_in, units)
    (a W stored (units, fan_in), as in W @ x, is recognised when z or b says which side is the units)."""
    units = next((shapes[k][-1] for k in ("z", "a") if k in shapes and len(shapes[k]) >= 1), None)
    if units is None and "b" in shapes and shapes["b"]:
        units = int(np.prod(shapes["b"]))
    fan_in = None
    W = shapes.get("W")
    if W is not None and len(W) == 2:
        if units is None or W[1] == units:
            fan_in, units = W[0], W[1]
        elif W[0] == units:
            fan_in = W[1]
    return {"fan_in": None if fan_in is None else int(fan_in), "units": None if units is None else int(units)}


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> Optional[float]:
    """Fraction of rows predicted right: argmax of several outputs, or one output at 0.5; targets as
    labels or one-hot rows. None when the shapes do not say how to compare them."""
    if outputs.ndim == 1:
        outputs = outputs.reshape(-1, 1)
    n, k = outputs.shape[0], outputs.shape[-1] if outputs.ndim == 2 else 0
    if outputs.ndim != 2 or n == 0 or targets.shape[0] != n:
        return None
    pred = outputs.argmax(axis=1) if k > 1 else (outputs[:, 0] >= 0.5)
    labels = targets.argmax(axis=1) if targets.ndim == 2 and targets.shape[1] == k > 1 else targets.reshape(n, -1)[:, 0]
    return float(np.count_nonzero(pred == labels)) / n


def data_summary(X: np.ndarray, y: Optional[np.ndarray], task: Optional[str]) -> dict:
    """The start record's `data` block for the inputs (and targets) a loop trains on."""
    x = X.astype(np.float64).reshape(X.shape[0], -1)
    data = {
        "n_train": int(x.shape[0]), "n_val": 0, "n_features": int(x.shape[1]), "n_classes": None,
        "input_mean": x.mean(axis=0).tolist(), "input_std": x.std(axis=0).tolist(),
        "input_min": x.min(axis=0).tolist(), "input_max": x.max(axis=0).tolist(),
        "target_mean": None, "target_std": None, "target_min": None, "target_max": None,
    }
    if y is None:
        return data
    if task == "regression":
        t = y.astype(np.float64)
        data.update(target_mean=float(t.mean()), target_std=float(t.std()),
                    target_min=float(t.min()), target_max=float(t.max()))
    elif task == "classification":
        data["n_classes"] = int(y.shape[1]) if y.ndim == 2 and y.shape[1] > 1 else int(np.unique(y).size)
    return data

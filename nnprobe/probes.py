"""Per-tensor statistics of what a training step already computed, fused to a few passes each.

Sums and dot products give mean, std and norm; a full isfinite scan runs only when a sum is
not finite, so the every-step NaN/inf check costs one pass. All results are float64 Python
numbers (or None when no entry is finite), ready for the JSON log.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

INF = float("inf")


def is_finite(arr: np.ndarray) -> bool:
    """One-pass check: a finite sum means every entry is finite; otherwise scan."""
    s = arr.sum()
    if math.isfinite(s):
        return True
    return bool(np.isfinite(arr).all())


def _moments(flat: np.ndarray) -> tuple[float, float, float, float]:
    """(sum, sum of squares, min, max) as Python floats; float16 is widened so squares fit."""
    if flat.dtype == np.float16:
        flat = flat.astype(np.float32)
    return float(flat.sum(dtype=np.float64)), float(np.dot(flat, flat)), float(flat.min()), float(flat.max())


def _finite_part(flat: np.ndarray) -> tuple[np.ndarray, dict]:
    nan = int(np.count_nonzero(np.isnan(flat)))
    posinf = int(np.count_nonzero(flat == INF))
    neginf = int(np.count_nonzero(flat == -INF))
    counts = {"nan": nan, "posinf": posinf, "neginf": neginf}
    if nan + posinf + neginf:
        return flat[np.isfinite(flat)].astype(np.float64), counts
    return flat.astype(np.float64), counts


def tensor_stats(arr: np.ndarray) -> dict:
    """mean, std, min, max and NaN/+inf/-inf counts (moments over the finite entries)."""
    flat = arr.ravel()
    s, ss, mn, mx = _moments(flat)
    n = flat.size
    if math.isfinite(s) and math.isfinite(ss):
        mean = s / n
        return {"mean": mean, "std": math.sqrt(max(ss / n - mean * mean, 0.0)), "min": mn, "max": mx,
                "nan": 0, "posinf": 0, "neginf": 0}
    finite, counts = _finite_part(flat)
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, **counts}
    mean, std, mn, mx = _scaled_moments(finite)
    return {"mean": mean, "std": std, "min": mn, "max": mx, **counts}


def _scaled_moments(x: np.ndarray) -> tuple[float, float, float, float]:
    """Moments of finite float64 values whose sums would overflow: computed on x / max|x|."""
    mn, mx = float(x.min()), float(x.max())
    scale = max(abs(mn), abs(mx)) or 1.0
    y = x / scale
    mean = float(y.mean())
    var = max(float(np.dot(y, y)) / y.size - mean * mean, 0.0)
    return mean * scale, math.sqrt(var) * scale, mn, mx


def preactivation_stats(z: np.ndarray, saturation: Optional[float]) -> tuple[dict, int]:
    """Stats of z plus the saturated fraction, and the number of units <= 0 for every example."""
    st = tensor_stats(z)
    st["sat_frac"] = None
    if saturation is not None:
        st["sat_frac"] = float(np.count_nonzero(np.abs(z) > saturation)) / z.size
    with np.errstate(invalid="ignore"):
        dead = int(np.count_nonzero(z.max(axis=0) <= 0))
    return st, dead


def activation_stats(a: np.ndarray, dead: int) -> dict:
    st = tensor_stats(a)
    st["zero_frac"] = 1.0 - np.count_nonzero(a) / a.size
    st["dead"] = dead
    return st


def gradient_stats(g: np.ndarray, with_zero_frac: bool) -> dict:
    flat = g.ravel()
    st = tensor_stats(flat)
    nonfinite = st["nan"] + st["posinf"] + st["neginf"]
    if st["mean"] is None:
        out = {"norm": None, "maxabs": None, "nonfinite": nonfinite}
    else:
        ss = sq_norm(flat) if nonfinite == 0 else INF
        norm = math.sqrt(ss) if math.isfinite(ss) else _finite_norm(flat)
        out = {"norm": norm, "maxabs": max(st["max"], -st["min"]), "nonfinite": nonfinite}
    if with_zero_frac:
        out["zero_frac"] = 1.0 - np.count_nonzero(flat) / flat.size
    return out


def _finite_norm(flat: np.ndarray) -> Optional[float]:
    """L2 norm of the finite entries without overflow; None when there are none."""
    finite = flat[np.isfinite(flat)].astype(np.float64)
    if finite.size == 0:
        return None
    scale = float(np.abs(finite).max())
    if scale == 0.0:
        return 0.0
    scaled = finite / scale
    return math.sqrt(float(np.dot(scaled, scaled))) * scale


def weight_stats(W: np.ndarray) -> dict:
    st = tensor_stats(W)
    nonfinite = st.pop("nan") + st.pop("posinf") + st.pop("neginf")
    flat = W.ravel()
    ss = sq_norm(flat) if nonfinite == 0 else INF
    norm = math.sqrt(ss) if math.isfinite(ss) else _finite_norm(flat)
    return {"norm": norm, **st, "pos_frac": float(np.count_nonzero(flat > 0)) / flat.size, "nonfinite": nonfinite}


def bias_stats(b: np.ndarray) -> dict:
    st = tensor_stats(b)
    flat = b.ravel().astype(np.float64)
    ss = float(np.dot(flat, flat))
    return {"norm": math.sqrt(ss) if math.isfinite(ss) else _finite_norm(flat), "mean": st["mean"]}


def sq_norm(arr: np.ndarray) -> float:
    """Squared L2 norm in the array's precision (float16 widened): non-finite when any entry is, or on overflow."""
    flat = arr.ravel()
    if flat.dtype == np.float16:
        flat = flat.astype(np.float32)
    return float(np.dot(flat, flat))

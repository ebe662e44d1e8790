"""Per-tensor statistics of what a training step already computed, in as few passes as NumPy allows.

Every pass is one BLAS call or one SIMD reduction over the cached array, never a copy:
a GEMV against a ones vector gives column sums (the sum, and for a ReLU the dead units),
a dot product the sum of squares (the norm, and with the sum the std), min and max one
reduction each, and a count is one comparison into a preallocated mask. A finite sum of
squares proves every entry finite, so the NaN/+inf/-inf census (a full isfinite scan)
runs only when it is not, and the every-step non-finite check costs one dot product.

Accuracy: BLAS accumulates in the tensor's own precision within a row or column, and the
partial sums are combined in float64; when |mean| dominates the std the variance is
recomputed about the mean, so cancellation cannot eat it. All results are Python floats
and ints (None when no entry is finite), ready for the JSON log (docs/log-schema.md).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

INF = float("inf")

#: below this many entries, Python arithmetic on a list beats the fixed cost of NumPy calls
_SMALL = 32
#: below this many entries, a BLAS call is not worth setting up; one NumPy reduction is
_BLAS_MIN = 2048
#: var < _CANCEL * mean of squares: E[x^2] - mean^2 lost too many digits; recompute about the mean
_CANCEL = 1.0 / 16.0

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

# preallocated scratch: ones vectors (per length and dtype) for the GEMV sums, bool masks for counts
_ones_cache: dict[tuple[int, np.dtype], np.ndarray] = {}
_mask_buf = np.empty(0, dtype=bool)


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    key = (n, dtype)
    ones = _ones_cache.get(key)
    if ones is None:
        if len(_ones_cache) > 64:
            _ones_cache.clear()
        ones = _ones_cache[key] = np.ones(n, dtype=dtype)
    return ones


def _mask(n: int) -> np.ndarray:
    """A reusable bool buffer of n entries (grown, never shrunk: the same tensors come back every step)."""
    global _mask_buf
    if _mask_buf.size < n:
        _mask_buf = np.empty(n, dtype=bool)
    return _mask_buf[:n]


def _count(ufunc: np.ufunc, flat: np.ndarray, value: float) -> int:
    """How many entries satisfy ufunc(entry, value), through the preallocated mask."""
    mask = _mask(flat.size)
    ufunc(flat, value, out=mask)
    return int(np.count_nonzero(mask))


def _prepare(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """The flat float32/float64 view the passes run on (float16 and others widened: a copy) and the row count."""
    dt = arr.dtype
    if dt != _F32 and dt != _F64:
        arr = arr.astype(_F32 if dt == np.float16 else _F64)
    rows = arr.shape[0] if arr.ndim >= 2 else 1
    return arr.reshape(-1), rows


def _colsums(flat: np.ndarray, rows: int) -> np.ndarray:
    """Column sums of the (rows, n/rows) matrix `flat` is a view of: one GEMV."""
    return _ones(rows, flat.dtype) @ flat.reshape(rows, -1)


def _sum(flat: np.ndarray, rows: int) -> float:
    n = flat.size
    if n >= _BLAS_MIN and rows >= 16 and flat.flags.c_contiguous:
        # row sums (GEMV against ones over the columns) are the faster BLAS layout
        return float(np.add.reduce(flat.reshape(rows, -1) @ _ones(n // rows, flat.dtype), dtype=np.float64))
    return float(np.add.reduce(flat, dtype=np.float64))


def _dot(flat: np.ndarray) -> float:
    return float(np.dot(flat, flat))


def _std(flat: np.ndarray, n: int, mean: float, ss: float) -> float:
    """sqrt(E[x^2] - mean^2), recomputed about the mean when the difference would cancel."""
    msq = ss / n
    var = msq - mean * mean
    if var < _CANCEL * msq:  # |mean| dominates: second pass about the mean, in float64
        d = flat.astype(np.float64)
        d -= mean
        dm = float(np.add.reduce(d)) / n
        var = float(np.dot(d, d)) / n - dm * dm
    return math.sqrt(var) if var > 0.0 else 0.0


# ---------------------------------------------------------------- the non-finite path (rare)


def _census(flat: np.ndarray) -> dict:
    """NaN, +inf and -inf counts: the full scan, run only when a sum of squares was not finite."""
    return {"nan": int(np.count_nonzero(np.isnan(flat))),
            "posinf": _count(np.equal, flat, INF),
            "neginf": _count(np.equal, flat, -INF)}


def _finite64(flat: np.ndarray, counts: dict) -> np.ndarray:
    if counts["nan"] + counts["posinf"] + counts["neginf"]:
        flat = flat[np.isfinite(flat)]
    return flat.astype(np.float64)


def _scaled_moments(x: np.ndarray) -> tuple[float, float, float, float, float]:
    """(mean, std, min, max, norm) of finite float64 values whose sums may overflow: computed on x / max|x|."""
    mn, mx = float(x.min()), float(x.max())
    scale = max(abs(mn), abs(mx)) or 1.0
    y = x / scale
    mean = float(np.add.reduce(y)) / y.size
    ss = float(np.dot(y, y))
    var = max(ss / y.size - mean * mean, 0.0)
    if var < _CANCEL * ss / y.size:
        d = y - mean
        dm = float(np.add.reduce(d)) / y.size
        var = max(float(np.dot(d, d)) / y.size - dm * dm, 0.0)
    return mean * scale, math.sqrt(var) * scale, mn, mx, math.sqrt(ss) * scale


def _slow_stats(flat: np.ndarray) -> dict:
    """Moments over the finite entries and the census, for a tensor whose sum of squares was not finite."""
    counts = _census(flat)
    finite = _finite64(flat, counts)
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, **counts, "norm": None}
    mean, std, mn, mx, norm = _scaled_moments(finite)
    return {"mean": mean, "std": std, "min": mn, "max": mx, **counts, "norm": norm}


# ---------------------------------------------------------------- tiny tensors: plain Python


def _small_std(vals: list, mean: float, ss: float) -> float:
    n = len(vals)
    msq = ss / n
    var = msq - mean * mean
    if var < _CANCEL * msq:
        var = math.fsum([(v - mean) * (v - mean) for v in vals]) / n
    return math.sqrt(var) if var > 0.0 else 0.0


def _small_stats(flat: np.ndarray) -> Optional[tuple[list, float, float, float, float]]:
    """(values, sum, sum of squares, min, max) in float64 Python arithmetic, or None when not all finite."""
    vals = flat.tolist()
    ss = 0.0
    for v in vals:
        ss += v * v
    if not (ss < INF):  # NaN, inf, or float64 overflow: the NumPy path sorts it out
        return None
    return vals, math.fsum(vals), ss, min(vals), max(vals)


# ---------------------------------------------------------------- public: one tensor


def is_finite(arr: np.ndarray) -> bool:
    """One pass: a finite sum of squares means every entry is finite; otherwise scan."""
    if arr.size == 0:
        return True
    flat, _ = _prepare(arr)
    if math.isfinite(_dot(flat)):
        return True
    return bool(np.isfinite(flat).all())


def sq_norm(arr: np.ndarray) -> float:
    """Squared L2 norm in the array's precision (float16 widened): non-finite when any entry is, or on overflow."""
    flat, _ = _prepare(arr)
    return _dot(flat)


def _moments(arr: np.ndarray, ss: Optional[float] = None,
             max_from: Optional[np.ndarray] = None) -> tuple[dict, np.ndarray, int, bool]:
    """{mean, std, min, max, nan, posinf, neginf, norm}, the flat view, its row count, and whether all is finite.

    `ss`: the sum of squares when the caller already has it; `max_from`: column maxima of arr.
    """
    flat, rows = _prepare(arr)
    n = flat.size
    if n == 0:
        return ({"mean": None, "std": None, "min": None, "max": None, "nan": 0, "posinf": 0, "neginf": 0,
                 "norm": None}, flat, rows, True)
    if n <= _SMALL:
        small = _small_stats(flat)
        if small is not None:
            vals, s, ss_, mn, mx = small
            mean = s / n
            return ({"mean": mean, "std": _small_std(vals, mean, ss_), "min": mn, "max": mx,
                     "nan": 0, "posinf": 0, "neginf": 0, "norm": math.sqrt(ss_)}, flat, rows, True)
    if ss is None:
        ss = _dot(flat)
    if not math.isfinite(ss):
        st = _slow_stats(flat)
        return st, flat, rows, st["nan"] + st["posinf"] + st["neginf"] == 0
    mean = _sum(flat, rows) / n
    if max_from is None:
        mx = float(flat.max())
    else:  # the maximum of the column maxima the caller needs anyway
        mx = float(max_from.max())
    return ({"mean": mean, "std": _std(flat, n, mean, ss), "min": float(flat.min()), "max": mx,
             "nan": 0, "posinf": 0, "neginf": 0, "norm": math.sqrt(ss)}, flat, rows, True)


def tensor_stats(arr: np.ndarray) -> dict:
    """mean, std, min, max and NaN/+inf/-inf counts (moments over the finite entries; None when there are none)."""
    st, _, _, _ = _moments(arr)
    del st["norm"]
    return st


def _colmax(z: np.ndarray) -> np.ndarray:
    """Per-unit maximum over the batch: a (units,) array (a 1-D z counts as one unit, as `z.max(axis=0)` has it)."""
    flat, rows = _prepare(z)
    if z.ndim < 2:
        return np.maximum.reduce(flat, keepdims=True)
    return np.maximum.reduce(flat.reshape(rows, -1), axis=0)


def _dead(colmax: np.ndarray) -> int:
    """Units whose pre-activation is <= 0 for every example (a NaN column maximum is not <= 0)."""
    return int(np.count_nonzero(colmax <= 0))


def preactivation_stats(z: np.ndarray, saturation: Optional[float]) -> tuple[dict, int]:
    """Stats of z plus the saturated fraction, and the number of units <= 0 for every example."""
    colmax = _colmax(z) if z.size else np.zeros(0)
    st, _, _, _ = _moments(z, max_from=colmax if z.ndim >= 2 and z.size > _SMALL else None)
    del st["norm"]
    st["sat_frac"] = None
    if saturation is not None:
        st["sat_frac"] = _sat_frac(z, saturation)
    return st, _dead(colmax)


def activation_stats(a: np.ndarray, dead: int) -> dict:
    st = tensor_stats(a)
    flat, _ = _prepare(a)
    st["zero_frac"] = _count(np.equal, flat, 0) / flat.size if flat.size else 0.0
    st["dead"] = dead
    return st


def _sat_frac(z: np.ndarray, saturation: float) -> float:
    flat, _ = _prepare(z)
    if flat.size == 0:
        return 0.0
    return (_count(np.greater, flat, saturation) + _count(np.less, flat, -saturation)) / flat.size


# ---------------------------------------------------------------- public: one layer's forward tensors


def forward_stats(z: np.ndarray, a: np.ndarray, kind: str, saturation: Optional[float]) -> tuple[dict, dict]:
    """The `z` and `a` objects of a layer record, sharing passes where the activation allows.

    kind: "relu" when a is max(z, 0) computed by the built-in ReLU (a's min and max then follow
    from z's, and the column sums of a give both its sum and the dead units); "identity" when a
    is z itself; anything else computes each tensor on its own.
    """
    if kind == "identity" and a is z:
        zs, dead = preactivation_stats(z, saturation)
        as_ = {k: zs[k] for k in ("mean", "std", "min", "max", "nan", "posinf", "neginf")}
        flat, _ = _prepare(a)
        as_["zero_frac"] = _count(np.equal, flat, 0) / flat.size if flat.size else 0.0
        as_["dead"] = dead
        return zs, as_
    if (kind == "relu" and a.shape == z.shape and a.dtype == z.dtype and z.ndim == 2
            and z.size > _SMALL and z.shape[0] >= 16):
        zs, zflat, _, z_finite = _moments(z)
        if z_finite:
            del zs["norm"]
            zs["sat_frac"] = None if saturation is None else _sat_frac(z, saturation)
            return zs, _relu_activation_stats(a, zs["min"], zs["max"])
    z_stats, dead = preactivation_stats(z, saturation)
    return z_stats, activation_stats(a, dead)


def _relu_activation_stats(a: np.ndarray, zmin: float, zmax: float) -> dict:
    """a = max(z, 0) with z finite: min/max from z's, sum and dead units from one GEMV of column sums."""
    flat, rows = _prepare(a)
    n = flat.size
    col = _colsums(flat, rows)
    mean = float(np.add.reduce(col, dtype=np.float64)) / n
    ss = _dot(flat)
    # a column of non-negative finite values sums to exactly 0 only when every entry is 0, i.e. z <= 0
    dead = int(np.count_nonzero(col == 0))
    return {"mean": mean, "std": _std(flat, n, mean, ss),
            "min": zmin if zmin > 0.0 else 0.0, "max": zmax if zmax > 0.0 else 0.0,
            "nan": 0, "posinf": 0, "neginf": 0,
            "zero_frac": _count(np.equal, flat, 0) / n, "dead": dead}


# ---------------------------------------------------------------- public: parameters and gradients


def gradient_stats(g: np.ndarray, with_zero_frac: bool, sq: Optional[float] = None) -> dict:
    """norm, max |entry| and non-finite count of a gradient (`sq`: its sum of squares, when already known)."""
    flat, _ = _prepare(g)
    n = flat.size
    if n and n <= _SMALL:
        small = _small_stats(flat)
        if small is not None:
            vals, _, ss, mn, mx = small
            out = {"norm": math.sqrt(ss), "maxabs": max(abs(mn), abs(mx)), "nonfinite": 0}
            if with_zero_frac:
                out["zero_frac"] = vals.count(0.0) / n
            return out
    if sq is None:
        sq = _dot(flat) if n else 0.0
    if math.isfinite(sq):
        if n:
            mn, mx = float(flat.min()), float(flat.max())
            out = {"norm": math.sqrt(sq), "maxabs": max(abs(mn), abs(mx)), "nonfinite": 0}
        else:
            out = {"norm": 0.0, "maxabs": None, "nonfinite": 0}
    else:
        st = _slow_stats(flat)
        nonfinite = st["nan"] + st["posinf"] + st["neginf"]
        if st["norm"] is None:
            out = {"norm": None, "maxabs": None, "nonfinite": nonfinite}
        else:
            out = {"norm": st["norm"], "maxabs": max(abs(st["min"]), abs(st["max"])), "nonfinite": nonfinite}
    if with_zero_frac:
        out["zero_frac"] = _count(np.equal, flat, 0) / n if n else 0.0
    return out


def weight_stats(W: np.ndarray) -> dict:
    """norm, mean, std, min, max (over the finite entries), the fraction > 0 and the non-finite count."""
    flat, _ = _prepare(W)
    n = flat.size
    if n and n <= _SMALL:
        small = _small_stats(flat)
        if small is not None:
            vals, s, ss, mn, mx = small
            mean = s / n
            var = ss / n - mean * mean
            return {"norm": math.sqrt(ss), "mean": mean, "std": math.sqrt(var) if var > 0.0 else 0.0,
                    "min": mn, "max": mx, "pos_frac": sum(1 for v in vals if v > 0.0) / n, "nonfinite": 0}
    st, flat, _, _ = _moments(W)
    nonfinite = st.pop("nan") + st.pop("posinf") + st.pop("neginf")
    norm = st.pop("norm")
    return {"norm": norm, **st, "pos_frac": _count(np.greater, flat, 0) / n if n else 0.0, "nonfinite": nonfinite}


def bias_stats(b: np.ndarray) -> dict:
    """norm and mean (over the finite entries)."""
    st, _, _, _ = _moments(b)
    return {"norm": st["norm"], "mean": st["mean"]}

"""Per-tensor statistics of what a training step already computed, in as few passes as NumPy allows.

Every pass is one BLAS call or one SIMD reduction over the array the step cached, never a
copy: a GEMV against a ones vector gives row or column sums (the sum; for a ReLU also the
dead units), a dot product the sum of squares (the norm, and with the sum the std), min and
max one reduction each, and a count is one comparison into a preallocated mask. A finite
sum of squares proves every entry finite, so the NaN/+inf/-inf census (the full isfinite
scan) runs only when it is not: the every-step non-finite check costs one dot product, and
on full-record steps the statistics are that check.

Where the optional C kernel is built and the CPU has AVX2 (nnprobe/probes/_kernels.c), a float32
tensor is read once for all of its statistics instead (nnprobe.probes.kernel says when, and switches it
off). Both paths give the same numbers and are tested against
naive references.

Accuracy: BLAS accumulates in the tensor's own precision (float16 is widened to float32) along
one row or column and those partial sums are combined in float64, so a float32 sum is within
~1e-7 of the sum of |x|, a sum of squares within ~1e-6; when |mean| dominates the std the
variance is recomputed about the mean in float64, so cancellation cannot eat it. Every result is a Python float or int (None when
no entry is finite), ready for the JSON log (docs/log-schema.md).
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple, Optional

import numpy as np

from nnprobe.probes import kernel

INF = float("inf")

#: up to this many entries, Python arithmetic on a list beats the fixed cost of NumPy calls
_SMALL = 32
#: below this many entries a GEMV is not worth setting up; one NumPy reduction is
_BLAS_MIN = 2048
#: var < _CANCEL * mean of squares: E[x^2] - mean^2 has lost digits; recompute about the mean
_CANCEL = 1.0 / 16.0
#: the column maximum is the cheaper dead-unit count for wide layers (it also gives max(z)) and for
#: tiny ones; in between (a few units, many examples) a 0/1 mask and one GEMV beat an axis-0 reduction
_COLMAX_MIN_UNITS = 64
_COLMAX_MAX_SIZE = 1024

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_dot = np.dot
_cnz = np.count_nonzero
_add = np.add.reduce
_equal, _greater, _less = np.equal, np.greater, np.less

# Preallocated scratch, reused every step (the same tensor sizes come back each time): read-only
# ones vectors, and per-thread masks so that runs in several threads cannot overwrite each other's.
_ones_cache: dict[tuple[int, str], np.ndarray] = {}
_scratch = threading.local()


def _ones(n: int, char: str) -> np.ndarray:
    ones = _ones_cache.get((n, char))
    if ones is None:
        if len(_ones_cache) > 64:
            _ones_cache.clear()
        ones = _ones_cache[(n, char)] = np.ones(n, dtype=char)
    return ones


def _mask(n: int) -> np.ndarray:
    """This thread's bool buffer, n entries of it (grown, never shrunk)."""
    buf = getattr(_scratch, "mask", None)
    if buf is None or buf.size < n:
        buf = _scratch.mask = np.empty(n, dtype=bool)
    return buf[:n]


def _fmask(n: int, char: str) -> np.ndarray:
    """This thread's float buffer of dtype `char`, n entries of it, for 0/1 masks a GEMV can count."""
    bufs = getattr(_scratch, "fmask", None)
    if bufs is None:
        bufs = _scratch.fmask = {}
    buf = bufs.get(char)
    if buf is None or buf.size < n:
        buf = bufs[char] = np.empty(n, dtype=char)
    return buf[:n]


def _count(ufunc: np.ufunc, flat: np.ndarray, value: float) -> int:
    """How many entries satisfy ufunc(entry, value): one comparison into the mask, one count."""
    mask = _mask(flat.size)
    ufunc(flat, value, out=mask)
    return int(_cnz(mask))


def _flat(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """The flat float32/float64 array the passes read (a view; float16 and others are widened, a copy) and its rows."""
    if arr.dtype.char not in "fd":
        arr = arr.astype(_F32 if arr.dtype == _F16 else _F64)
    return arr.reshape(-1), (arr.shape[0] if arr.ndim >= 2 else 1)


def _sum(flat: np.ndarray, rows: int) -> float:
    """Sum in float64 of per-row BLAS sums (one GEMV); a plain float64 reduction for small or 1-D arrays."""
    n = flat.size
    if n >= _BLAS_MIN and rows >= 16:
        return float(_add(flat.reshape(rows, -1) @ _ones(n // rows, flat.dtype.char), dtype=_F64))
    return float(_add(flat, dtype=_F64))


def _std(x: np.ndarray, mean: float, ss: float) -> float:
    """sqrt(E[x^2] - mean^2), recomputed about the mean in float64 when the difference would cancel."""
    n = x.size
    msq = ss / n
    var = msq - mean * mean
    if var < _CANCEL * msq:
        d = x.astype(_F64).reshape(-1)
        d -= mean
        dm = float(_add(d)) / n
        var = float(_dot(d, d)) / n - dm * dm
    return math.sqrt(var) if var > 0.0 else 0.0


# ---------------------------------------------------------------- the non-finite path (rare)


def _census(flat: np.ndarray) -> tuple[int, int, int]:
    """(NaN, +inf, -inf) counts: the full scan, run only when a sum of squares was not finite."""
    return int(_cnz(np.isnan(flat))), _count(_equal, flat, INF), _count(_equal, flat, -INF)


def _finite_moments(flat: np.ndarray, n_bad: int) -> Optional[tuple[float, float, float, float, float]]:
    """(mean, std, min, max, norm) of the finite entries, computed on x / max|x| so no sum overflows."""
    x = flat[np.isfinite(flat)] if n_bad else flat
    if x.size == 0:
        return None
    x = x.astype(_F64)
    mn, mx = float(x.min()), float(x.max())
    scale = max(abs(mn), abs(mx)) or 1.0
    x /= scale
    n = x.size
    mean = float(_add(x)) / n
    ss = float(_dot(x, x))
    return mean * scale, _std(x, mean, ss) * scale, mn, mx, math.sqrt(ss) * scale


def _slow(flat: np.ndarray) -> tuple[tuple[int, int, int], Optional[tuple[float, float, float, float, float]]]:
    counts = _census(flat)
    return counts, _finite_moments(flat, sum(counts))


def _slow_stats(flat: np.ndarray) -> tuple[dict, Optional[float]]:
    (nan, posinf, neginf), m = _slow(flat)
    if m is None:
        return {"mean": None, "std": None, "min": None, "max": None, "nan": nan, "posinf": posinf,
                "neginf": neginf}, None
    return {"mean": m[0], "std": m[1], "min": m[2], "max": m[3], "nan": nan, "posinf": posinf,
            "neginf": neginf}, m[4]


# ---------------------------------------------------------------- tiny tensors: plain Python


def _small(flat: np.ndarray) -> Optional[tuple[list, float, float, float, float, float]]:
    """(values, mean, std, min, max, sum of squares) in float64 Python arithmetic; None unless all finite."""
    vals = flat.tolist()
    ss = 0.0
    for v in vals:
        ss += v * v
    if not ss < INF:  # NaN, inf, or float64 overflow: the NumPy path sorts it out
        return None
    n = len(vals)
    mean = math.fsum(vals) / n
    var = ss / n - mean * mean
    if var < _CANCEL * ss / n:
        var = math.fsum([(v - mean) * (v - mean) for v in vals]) / n
    return vals, mean, (math.sqrt(var) if var > 0.0 else 0.0), min(vals), max(vals), ss


# ---------------------------------------------------------------- the one-pass kernel (float32)


def _identity_moments(z_stats: dict) -> dict:
    """a's moments when a is z: z's without sat_frac (a copy is ~4x cheaper than picking the keys)."""
    a_stats = z_stats.copy()
    del a_stats["sat_frac"]
    return a_stats


def _kernel_for(arr: np.ndarray) -> bool:
    return kernel.active is not None and arr.dtype == _F32 and arr.size > 0


def _moments_from(x: np.ndarray, n: int, total: float, ss: float, mn: float, mx: float) -> dict:
    """The moments object from a pass's sums; x (any shape) is read again only if the std would cancel."""
    mean = total / n
    return {"mean": mean, "std": _std(x, mean, ss), "min": mn, "max": mx, "nan": 0, "posinf": 0, "neginf": 0}


def _kernel_stats(flat: np.ndarray) -> Optional[tuple[dict, float, int]]:
    """(moments, sum of squares, zero count) of a float32 tensor in one pass; None unless all finite."""
    m = kernel.active.moments(flat)
    if not m.sumsq < INF:  # a float32 square cannot overflow float64: some entry is NaN or inf
        return None
    return _moments_from(flat, m.n, m.total, m.sumsq, m.min, m.max), m.sumsq, m.zeros


def _kernel_gradient(flat: np.ndarray, with_zero_frac: bool) -> Optional[tuple[dict, float]]:
    """(norm, max |entry|, [zero fraction]) of a float32 gradient and its sum of squares; None unless all finite."""
    v = kernel.active.vector(flat)
    return _gradient_from(v.n, v.sumsq, v.min, v.max, v.zeros, with_zero_frac)


def _gradient_from(n: int, ss: float, mn: float, mx: float, zeros: int,
                   with_zero_frac: bool) -> Optional[tuple[dict, float]]:
    if not ss < INF:
        return None
    out = {"norm": math.sqrt(ss), "maxabs": max(abs(mn), abs(mx)), "nonfinite": 0}
    if with_zero_frac:
        out["zero_frac"] = zeros / n
    return out, ss


def _kernel_forward(z: np.ndarray, a: np.ndarray, kind: str, saturation: Optional[float]) -> Optional[tuple[dict, dict]]:
    """forward_stats from one pass over z (and, unless a follows from z, one over a); None unless all finite.

    The pass over z also sums max(z, 0) and its square and counts z > 0: for the built-in ReLU,
    a = max(z, 0) exactly, so its statistics need no read of a at all.
    """
    cols = z.shape[1]  # the kernel reads any C-contiguous array as its flat buffer: no reshape needed
    if kind == "identity" and a is z:  # a is z: its zero count is wanted, which the signed pass leaves out
        m = kernel.active.moments(z, cols)
        if not m.sumsq < INF:
            return None
        z_stats = _moments_from(z, m.n, m.total, m.sumsq, m.min, m.max)
        z_stats["sat_frac"] = None if saturation is None else _sat_frac(z.reshape(-1), saturation)
        a_stats = _identity_moments(z_stats)
        a_stats["zero_frac"] = m.zeros / m.n
        a_stats["dead"] = m.dead
        return z_stats, a_stats
    m = kernel.active.signed(z, cols, saturation)
    if not m.sumsq < INF:
        return None
    n = m.n
    z_stats = _moments_from(z, n, m.total, m.sumsq, m.min, m.max)
    z_stats["sat_frac"] = None if saturation is None else m.saturated / n
    if kind == "relu" and a.shape == z.shape and a.dtype == z.dtype and a.flags.c_contiguous:
        a_stats = _moments_from(a, n, m.pos_sum, m.pos_sumsq, m.min if m.min > 0.0 else 0.0,
                                m.max if m.max > 0.0 else 0.0)
        a_stats["zero_frac"] = (n - m.positives) / n
    else:
        if not _kernel_for(a) or not a.flags.c_contiguous:
            return None
        k = _kernel_stats(a)
        if k is None:
            return None
        a_stats, _, zeros = k
        a_stats["zero_frac"] = zeros / a.size
    a_stats["dead"] = m.dead
    return z_stats, a_stats


# ---------------------------------------------------------------- public: one tensor


def is_finite(arr: np.ndarray) -> bool:
    """One pass: a finite sum of squares means every entry is finite; otherwise scan."""
    if arr.size == 0:
        return True
    flat, _ = _flat(arr)
    if float(_dot(flat, flat)) < INF:
        return True
    return bool(np.isfinite(flat).all())


def sq_norm(arr: np.ndarray) -> float:
    """Squared L2 norm in the array's precision (float16 widened): non-finite when any entry is, or on overflow."""
    flat, _ = _flat(arr)
    return float(_dot(flat, flat))


def _stats(flat: np.ndarray, rows: int, mx: Optional[float] = None,
           ss: Optional[float] = None) -> tuple[dict, Optional[float], bool]:
    """({mean, std, min, max, nan, posinf, neginf}, norm, all finite).

    `mx`, `ss`: the maximum and the sum of squares when the caller already has them.
    """
    n = flat.size
    if n <= _SMALL:
        if n == 0:
            return {"mean": None, "std": None, "min": None, "max": None, "nan": 0, "posinf": 0, "neginf": 0}, None, True
        small = _small(flat)
        if small is not None:
            _, mean, std, mn, mx_, ss = small
            return ({"mean": mean, "std": std, "min": mn, "max": mx_, "nan": 0, "posinf": 0, "neginf": 0},
                    math.sqrt(ss), True)
    if ss is None:
        ss = float(_dot(flat, flat))
    if ss < INF:
        mean = _sum(flat, rows) / n
        return ({"mean": mean, "std": _std(flat, mean, ss), "min": float(flat.min()),
                 "max": float(flat.max()) if mx is None else mx, "nan": 0, "posinf": 0, "neginf": 0},
                math.sqrt(ss), True)
    st, norm = _slow_stats(flat)
    return st, norm, st["nan"] + st["posinf"] + st["neginf"] == 0


def tensor_stats(arr: np.ndarray) -> dict:
    """mean, std, min, max and NaN/+inf/-inf counts (moments over the finite entries; None when there are none)."""
    flat, rows = _flat(arr)
    if _kernel_for(flat):
        k = _kernel_stats(flat)
        if k is not None:
            return k[0]
    return _stats(flat, rows)[0]


def _dead_and_max(z: np.ndarray, flat: np.ndarray, rows: int) -> tuple[int, Optional[float]]:
    """Units whose pre-activation is <= 0 for every example, and max(z) when that came for free.

    Wide layers take the column maximum (which also gives max(z)); narrow ones count positive
    entries per column with a 0/1 mask and one GEMV, far cheaper than an axis-0 reduction over
    a few columns. The two agree only for finite z (a NaN column maximum is not <= 0), so the
    mask is used only once the caller knows z is finite.
    """
    if flat.size == 0:
        return 0, None
    if z.ndim < 2:
        return int(float(flat.max()) <= 0), None
    cols = flat.size // rows
    if cols >= _COLMAX_MIN_UNITS or flat.size <= _COLMAX_MAX_SIZE:
        colmax = np.maximum.reduce(flat.reshape(rows, cols), axis=0)
        return int(_cnz(colmax <= 0)), (float(colmax.max()) if colmax.size else None)
    char = flat.dtype.char
    fmask = _fmask(flat.size, char)
    _greater(flat, 0, out=fmask, casting="unsafe")
    positives = _ones(rows, char) @ fmask.reshape(rows, cols)
    return cols - int(_cnz(positives)), None


def dead_units(z: np.ndarray) -> str:
    """Which units have a pre-activation <= 0 for every example, as hex digits of a bit mask (bit j: unit j).

    A count says how many units are dead in one batch; the mask says which, so the units dead in
    every batch of a window (the bitwise AND of the masks) can be told from units that merely
    rotate (diagnose's dead-relu window). One pass over z, taken only when the count is not 0.
    """
    colmax = np.maximum.reduce(z, axis=0)
    bits = np.packbits(colmax <= 0, bitorder="little")
    return format(int.from_bytes(bits.tobytes(), "little"), "x")


def preactivation_stats(z: np.ndarray, saturation: Optional[float]) -> tuple[dict, int]:
    """Stats of z plus the saturated fraction, and the number of units <= 0 for every example."""
    flat, rows = _flat(z)
    ss = float(_dot(flat, flat)) if flat.size > _SMALL else None
    if ss is not None and ss < INF:
        dead, mx = _dead_and_max(z, flat, rows)
        st, _, _ = _stats(flat, rows, mx, ss)
    else:
        st, _, finite = _stats(flat, rows)
        if finite:
            dead, _ = _dead_and_max(z, flat, rows)
        elif z.ndim >= 2:
            dead = int(_cnz(np.maximum.reduce(flat.reshape(rows, -1), axis=0) <= 0))
        else:
            dead = int(flat.size > 0 and bool(flat.max() <= 0))
    st["sat_frac"] = None if saturation is None else _sat_frac(flat, saturation)
    return st, dead


def activation_stats(a: np.ndarray, dead: int) -> dict:
    flat, rows = _flat(a)
    if _kernel_for(flat):
        k = _kernel_stats(flat)
        if k is not None:
            st, _, zeros = k
            st["zero_frac"] = zeros / flat.size
            st["dead"] = dead
            return st
    st, _, _ = _stats(flat, rows)
    st["zero_frac"] = _count(_equal, flat, 0) / flat.size if flat.size else 0.0
    st["dead"] = dead
    return st


def _sat_frac(flat: np.ndarray, saturation: float) -> float:
    """Fraction with |z| > saturation (NaN is not), as two one-sided counts: no |z| temporary."""
    if flat.size == 0:
        return 0.0
    return (_count(_greater, flat, saturation) + _count(_less, flat, -saturation)) / flat.size


# ---------------------------------------------------------------- public: one layer's forward tensors


def mark_dead_units(a_stats: dict, z: np.ndarray, kind: str, saturation: Optional[float]) -> None:
    """Where some unit is dead, `a.dead_units` says which (dead-relu's windows AND these masks across
    batches); healthy layers pay nothing for it."""
    if a_stats.get("dead") and kind != "identity" and saturation is None and z.ndim == 2:
        a_stats["dead_units"] = dead_units(z)


def forward_stats(z: np.ndarray, a: np.ndarray, kind: str, saturation: Optional[float]) -> tuple[dict, dict]:
    """The `z` and `a` objects of a layer record, sharing passes where the activation allows.

    kind "relu": a is max(z, 0) from the built-in ReLU, so a's min and max follow from z's and
    one GEMV of a's column sums gives both its sum and the dead units. kind "identity": a is z
    itself. Anything else reads each tensor on its own.
    """
    if _kernel_for(z) and z.ndim == 2 and z.flags.c_contiguous:
        got = _kernel_forward(z, a, kind, saturation)
        if got is not None:
            return got
    if kind == "relu" and a.shape == z.shape and a.dtype == z.dtype and z.ndim == 2 and z.shape[0] >= 16 \
            and z.size > _SMALL and z.dtype.char in "fd" and z.flags.c_contiguous and a.flags.c_contiguous:
        zs, _, finite = _stats(z.reshape(-1), z.shape[0])
        if finite:
            zs["sat_frac"] = None if saturation is None else _sat_frac(z.reshape(-1), saturation)
            return zs, _relu_activation_stats(a, zs["min"], zs["max"])
    z_stats, dead = preactivation_stats(z, saturation)
    if kind == "identity" and a is z:
        a_stats = _identity_moments(z_stats)
        flat, _ = _flat(a)
        a_stats["zero_frac"] = _count(_equal, flat, 0) / flat.size if flat.size else 0.0
        a_stats["dead"] = dead
        return z_stats, a_stats
    return z_stats, activation_stats(a, dead)


def _relu_activation_stats(a: np.ndarray, zmin: float, zmax: float) -> dict:
    """a = max(z, 0) for a finite z: min and max from z's; sum and dead units from one GEMV of column sums."""
    rows = a.shape[0]
    flat = a.reshape(-1)
    n = flat.size
    col = _ones(rows, flat.dtype.char) @ a
    mean = float(_add(col, dtype=_F64)) / n
    ss = float(_dot(flat, flat))
    # a column of non-negative finite values sums to exactly 0 only when every entry is 0, i.e. every z <= 0
    return {"mean": mean, "std": _std(flat, mean, ss),
            "min": zmin if zmin > 0.0 else 0.0, "max": zmax if zmax > 0.0 else 0.0,
            "nan": 0, "posinf": 0, "neginf": 0,
            "zero_frac": _count(_equal, flat, 0) / n, "dead": col.size - int(_cnz(col))}


# ---------------------------------------------------------------- public: parameters and gradients


def gradient_stats(g: np.ndarray, with_zero_frac: bool, sq: Optional[float] = None) -> dict:
    """norm, max |entry| and non-finite count of a gradient; `sq`: its sum of squares when already known."""
    flat, _ = _flat(g)
    if _kernel_for(flat):
        got = _kernel_gradient(flat, with_zero_frac)
        if got is not None:
            return got[0]
    return _numpy_gradient_stats(flat, with_zero_frac, sq)


def _numpy_gradient_stats(flat: np.ndarray, with_zero_frac: bool, sq: Optional[float]) -> dict:
    """gradient_stats in NumPy passes (a non-finite `sq` goes straight to the exact census)."""
    n = flat.size
    if 0 < n <= _SMALL:
        small = _small(flat)
        if small is not None:
            vals, _, _, mn, mx, ss = small
            out = {"norm": math.sqrt(ss), "maxabs": max(abs(mn), abs(mx)), "nonfinite": 0}
            if with_zero_frac:
                out["zero_frac"] = vals.count(0.0) / n
            return out
    if sq is None:
        sq = float(_dot(flat, flat)) if n else 0.0
    if sq < INF:
        if n:
            out = {"norm": math.sqrt(sq), "maxabs": max(abs(float(flat.min())), abs(float(flat.max()))), "nonfinite": 0}
        else:
            out = {"norm": 0.0, "maxabs": None, "nonfinite": 0}
    else:
        counts, m = _slow(flat)
        if m is None:
            out = {"norm": None, "maxabs": None, "nonfinite": sum(counts)}
        else:
            out = {"norm": m[4], "maxabs": max(abs(m[2]), abs(m[3])), "nonfinite": sum(counts)}
    if with_zero_frac:
        out["zero_frac"] = _count(_equal, flat, 0) / n if n else 0.0
    return out


def gradient_stats_with_sq(g: np.ndarray, with_zero_frac: bool) -> tuple[dict, float]:
    """gradient_stats and the sum of squares (the global norm's share), from one pass where the kernel runs."""
    flat, _ = _flat(g)
    if _kernel_for(flat):
        got = _kernel_gradient(flat, with_zero_frac)
        if got is not None:
            return got
    sq = sq_norm(flat)
    return _numpy_gradient_stats(flat, with_zero_frac, sq), sq


def weight_stats(W: np.ndarray) -> dict:
    """norm, mean, std, min, max (over the finite entries), the fraction > 0 and the non-finite count."""
    flat, rows = _flat(W)
    n = flat.size
    if _kernel_for(flat):
        m = kernel.active.signed(flat)
        if m.sumsq < INF:
            st = _moments_from(flat, m.n, m.total, m.sumsq, m.min, m.max)
            return {"norm": math.sqrt(m.sumsq), "mean": st["mean"], "std": st["std"], "min": m.min, "max": m.max,
                    "pos_frac": m.positives / m.n, "nonfinite": 0}
    if 0 < n <= _SMALL:
        small = _small(flat)
        if small is not None:
            vals, mean, std, mn, mx, ss = small
            return {"norm": math.sqrt(ss), "mean": mean, "std": std, "min": mn, "max": mx,
                    "pos_frac": sum(1 for v in vals if v > 0.0) / n, "nonfinite": 0}
    st, norm, _ = _stats(flat, rows)
    return {"norm": norm, "mean": st["mean"], "std": st["std"], "min": st["min"], "max": st["max"],
            "pos_frac": _count(_greater, flat, 0) / n if n else 0.0,
            "nonfinite": st["nan"] + st["posinf"] + st["neginf"]}


def weight_norm_stats(W: np.ndarray) -> dict:
    """norm (over the finite entries) and the non-finite count: one dot product when all is finite."""
    flat, _ = _flat(W)
    ss = float(_dot(flat, flat)) if flat.size else 0.0
    if ss < INF:
        return {"norm": math.sqrt(ss), "nonfinite": 0}
    counts, m = _slow(flat)
    return {"norm": None if m is None else m[4], "nonfinite": sum(counts)}


def bias_stats(b: np.ndarray) -> dict:
    """norm and mean over the finite entries: a dot product and a float64 sum."""
    flat, _ = _flat(b)
    n = flat.size
    if n == 0:
        return {"norm": None, "mean": None}
    if _kernel_for(flat):
        m = kernel.active.moments(flat)
        if m.sumsq < INF:
            return {"norm": math.sqrt(m.sumsq), "mean": m.total / n}
    if n <= _SMALL:
        small = _small(flat)
        if small is not None:
            return {"norm": math.sqrt(small[5]), "mean": small[1]}
    ss = float(_dot(flat, flat))
    if ss < INF:
        return {"norm": math.sqrt(ss), "mean": float(_add(flat, dtype=_F64)) / n}
    _, m = _slow(flat)
    return {"norm": None, "mean": None} if m is None else {"norm": m[4], "mean": m[0]}


# ---------------------------------------------------------------- the loss's log input


def probability_stats(p: np.ndarray, epsilon: float, two_sided: bool) -> dict:
    """What the loss is about to take the log of, counted before epsilon is added."""
    n_below = 0
    if epsilon > 0:
        n_below = int(np.count_nonzero(p < epsilon))
        if two_sided:
            n_below += int(np.count_nonzero(p > 1 - epsilon))
    if _kernel_for(p) and p.flags.c_contiguous:
        m = kernel.active.moments(p)  # min, max and the zero count in one read
        finite = m.sumsq < INF
        mn, mx, n_zero = m.min, m.max, m.zeros
    else:
        mn, mx = float(p.min()), float(p.max())
        finite = math.isfinite(mn) and math.isfinite(mx)
        n_zero = int(np.count_nonzero(p == 0)) if finite and mn <= 0 else 0
    if not finite:  # NaN or inf among them: count everything
        return {"n": int(p.size), "min": float(p.min()), "max": float(p.max()),
                "n_zero": int(np.count_nonzero(p == 0)), "n_one": int(np.count_nonzero(p == 1)),
                "n_outside": int(np.count_nonzero((p < 0) | (p > 1))), "n_below_eps": n_below}
    # the extremes say which counts can be non-zero: probabilities inside (0, 1) need none
    return {
        "n": int(p.size),
        "min": mn,
        "max": mx,
        "n_zero": n_zero,
        "n_one": int(np.count_nonzero(p == 1)) if mx >= 1 else 0,
        "n_outside": int(np.count_nonzero((p < 0) | (p > 1))) if mn < 0 or mx > 1 else 0,
        "n_below_eps": n_below,
    }


# ---------------------------------------------------------------- a parameter after its update


class ParamSums(NamedTuple):
    """A parameter's sum of squares (finite only if every entry is) and, where the same read gave it, its sum."""

    total: Optional[float]
    sumsq: float


def parameter_sums(p: np.ndarray) -> ParamSums:
    """One read of a parameter after its update: it proves the update finite and gives the next record
    the parameter's norm (and, from the kernel's pass, a bias's mean) without reading it again."""
    flat, _ = _flat(p)
    if _kernel_for(flat):
        v = kernel.active.vector(flat)
        return ParamSums(v.total, v.sumsq)
    return ParamSums(None, float(_dot(flat, flat)))


# ---------------------------------------------------------------- one step


class StepProbe:
    """The per-layer statistics a full step takes as its tensors are made: forward() for z and a, and
    the gradients' (gW, gb), set by the trainer as the backward pass makes each."""

    def __init__(self, n_layers: int) -> None:
        self.z: list = [None] * n_layers
        self.a: list = [None] * n_layers
        self.W: list = [None] * n_layers
        self.b: list = [None] * n_layers
        self.gW: list = [None] * n_layers
        self.gb: list = [None] * n_layers

    def forward(self, i: int, z: np.ndarray, a: np.ndarray, kind: str, saturation: Optional[float]) -> None:
        self.z[i], self.a[i] = forward_stats(z, a, kind, saturation)
        mark_dead_units(self.a[i], z, kind, saturation)

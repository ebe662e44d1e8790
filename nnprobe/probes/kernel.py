"""The optional C kernel (nnprobe/probes/_kernels.c): read-only statistics, returned as named results.

It is used only where it was built and the CPU has AVX2; NNPROBE_NUMPY_STATS=1 in the
environment, or use(False), makes nnprobe use NumPy alone (the same numbers, more passes).
It never changes a tensor: training arithmetic is NumPy's, in nnprobe.nn.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import numpy as np

try:
    from nnprobe.probes import _kernels
except ImportError:  # built without a C compiler
    _kernels = None


class Moments(NamedTuple):
    """One pass over a float32 tensor: its size, sums (in float64), extremes and zero count.

    `dead`: columns (of rows x `cols`) whose entries are all <= 0, or -1 when no `cols` was given."""

    n: int
    total: float
    sumsq: float
    min: float
    max: float
    zeros: int
    dead: int


class SignedMoments(NamedTuple):
    """Moments plus what a ReLU's output and a squashing activation's flat region need, from the same pass:
    the sum and sum of squares of max(x, 0), how many x > 0, how many |x| > saturation. (No zero count.)"""

    n: int
    total: float
    sumsq: float
    min: float
    max: float
    pos_sum: float
    pos_sumsq: float
    positives: int
    saturated: int
    dead: int


class VectorMoments(NamedTuple):
    """One pass over a gradient or a parameter (its own summation order: see vector_stats in the C file)."""

    n: int
    total: float
    sumsq: float
    min: float
    max: float
    zeros: int


class Kernel:
    """The C entry points, each returning a named result."""

    def moments(self, x: np.ndarray, cols: int = 0) -> Moments:
        return Moments._make(_kernels.stats(x, False, cols))

    def signed(self, x: np.ndarray, cols: int = 0, saturation: Optional[float] = None) -> SignedMoments:
        n, total, ss, mn, mx, _, pos_sum, pos_ss, positives, saturated, dead = _kernels.stats(
            x, True, cols, math.inf if saturation is None else saturation)
        return SignedMoments(n, total, ss, mn, mx, pos_sum, pos_ss, positives, saturated, dead)

    def vector(self, x: np.ndarray) -> VectorMoments:
        return VectorMoments._make(_kernels.vector_stats(x))

    def copy_sumsq(self, x: np.ndarray, out: np.ndarray) -> float:
        """Copy float32 `x` into `out` (same size) and return ||x||^2, in one read."""
        return _kernels.copy_sumsq(x, out)

    def diff_sumsq(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """(||a - b||^2, ||a||^2) of two float32 arrays of the same size, in one read of each."""
        return _kernels.diff_sumsq(a, b)

    def diff_copy(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
        """(||a - b||^2, ||a||^2, fingerprint(a)) of two float32 arrays of the same size; then a is copied into b."""
        return _kernels.diff_copy(a, b)

    def fingerprint(self, x: np.ndarray) -> int:
        """A position-keyed 32-bit hash of the bytes of any C-contiguous array (probes.changes.Fingerprint)."""
        return _kernels.fingerprint(x)


_KERNEL = Kernel() if _kernels is not None and _kernels.available() else None

#: the kernel while it is in use, else None
active: Optional[Kernel] = None if os.environ.get("NNPROBE_NUMPY_STATS") else _KERNEL


def use(enabled: bool) -> bool:
    """Switch the kernel on or off (tests, benchmarks); returns whether it is now in use."""
    global active
    active = _KERNEL if enabled else None
    return active is not None


def in_use() -> bool:
    return active is not None

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

from nnprobe.probes import kernel, statistics as probes


def as_float(arr: np.ndarray) -> np.ndarray:
    """Integer or boolean tensors are read as float64; float16/32/64 as they are."""
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


#: the fingerprint's key constants (FP_KEY and FP_OFFSET in _kernels.c)
_KEY = np.uint32(0x9E3779B1)
_OFFSET = np.uint32(0x7F4A7C15)


@dataclass(frozen=True)
class Fingerprint:
    """A 64-bit hash (NH, with keys made from the positions) of a tensor's bytes: it changes when the
    entries are overwritten, permuted or negated (a 0/1 mask written over z, a sign flip), at the
    cost of one read. Integer arithmetic: exact, whatever the order of summation."""

    value: int

    @classmethod
    def of(cls, arr: np.ndarray) -> "Fingerprint":
        arr = np.ascontiguousarray(arr)
        if kernel.active is not None:
            return cls(kernel.active.fingerprint(arr))
        return cls(_numpy_fingerprint(arr))

    def same(self, other: "Fingerprint") -> bool:
        return self.value == other.value


def _numpy_fingerprint(arr: np.ndarray) -> int:
    """The kernel's fingerprint in NumPy: the bytes as little-endian 32-bit words, zero-padded to whole
    pairs; the sum modulo 2^64 of (w[2j] + k[2j]) * (w[2j+1] + k[2j+1]), k[i] = i * KEY + OFFSET mod 2^32."""
    raw = arr.reshape(-1).view(np.uint8)
    if raw.size % 8:
        raw = np.concatenate([raw, np.zeros(8 - raw.size % 8, dtype=np.uint8)])
    words = raw.view("<u4")
    keyed = (words + (np.arange(words.size, dtype=np.uint32) * _KEY + _OFFSET)).astype(np.uint64)
    return int(np.sum(keyed[0::2] * keyed[1::2], dtype=np.uint64))


class UpdateTracker:
    """A weight's value at one step, kept to measure the update applied to it: ||W_after - W_before||.

    A loop that updates in place (`W -= lr * dW`) shows the update by the end of the step; one that
    rebinds (`W = W - lr * dW`) hands the new array over at the next step. The copy goes into a
    buffer allocated once and reused.

    Where the kernel runs (float32), each read does double duty: keeping W also gives ||W||^2, and
    measuring an in-place update also gives ||W_after||^2, its fingerprint, and the copy of W_after
    the next step's update is measured against. The next step then checks, with one read of W and
    no write, that the same array still holds those values (nothing changed W between the steps)
    before it relies on that copy.
    """

    def __init__(self) -> None:
        self._before: Optional[np.ndarray] = None
        self._diff: Optional[np.ndarray] = None  # NumPy path only: W_after - W_before
        self._source: Optional[np.ndarray] = None  # the array handed over, to see an in-place update
        self._print: Optional[int] = None  # the fingerprint of the copy the end of a step made
        self._sq: Optional[float] = None  # and its ||.||^2
        self._copied_at: Optional[int] = None  # at the end of which step
        self.norm_before: Optional[float] = None  # ||W_before||, set by whoever took W's statistics
        self.after_finite: Optional[bool] = None  # whether the measured W_after is finite, where known
        self._measured = True  # nothing kept yet

    def keep(self, W: np.ndarray, step: Optional[int] = None) -> Optional[float]:
        """Keep W as it is before this step's update; ||W||^2 when a read gave it, else None. `step`: the
        step's index, which lets the copy made at the end of the step before serve (steps in between
        would have changed W: no read is spent checking)."""
        reads = _kernel_reads(W)
        if (self._print is not None and reads and W is self._source and W.shape == self._before.shape
                and (step is None or self._copied_at == step - 1) and kernel.active.fingerprint(W) == self._print):
            self._measured = False
            return self._sq  # the end of the last step copied these very values
        self._print = None
        if self._before is None or self._before.shape != W.shape or self._before.dtype != W.dtype:
            self._before = np.empty(W.shape, dtype=W.dtype)
        self._source, self._measured = W, False
        if reads:
            return kernel.active.copy_sumsq(W, self._before)
        np.copyto(self._before, W)
        return None

    def in_place(self, step: Optional[int] = None) -> Optional[float]:
        """||W_after - W_before|| of the array handed over, if the step changed it; else None."""
        norm = self.update_norm(step)
        return norm if norm != 0.0 else None

    def update_norm(self, step: Optional[int] = None) -> Optional[float]:
        """||W_after - W_before|| of the array handed over, 0.0 included (a frozen weight); None when
        nothing was kept or the update is already known."""
        self.after_finite = None
        if self._measured:
            return None
        W = self._source
        if _kernel_reads(W) and W.dtype == self._before.dtype and W.shape == self._before.shape:
            sq, after, self._print = kernel.active.diff_copy(W, self._before)
            self._sq, self.after_finite, self._copied_at = after, after < math.inf, step
            return self._settle(sq)
        return self._measure(W)

    def rebound(self, W: np.ndarray) -> Optional[float]:
        """||W - W_before|| for a newly handed-over array (a loop that rebinds W); None if not one."""
        if self._measured or W is self._source or self._before.shape != W.shape:
            return None
        return self._measure(W)

    def _measure(self, W: np.ndarray) -> float:
        if _kernel_reads(W) and W.dtype == self._before.dtype:
            sq, after = kernel.active.diff_sumsq(W, self._before)
            self.after_finite = after < math.inf
        else:
            if self._diff is None or self._diff.shape != W.shape or self._diff.dtype != self._before.dtype:
                self._diff = np.empty(W.shape, dtype=self._before.dtype)
            np.subtract(W, self._before, out=self._diff, casting="unsafe")
            sq = probes.sq_norm(self._diff)
            self.after_finite = None
        return self._settle(sq)

    def _settle(self, sq: float) -> float:
        if sq != 0.0:
            self._measured = True  # the kept value's update is known; a later step keeps anew
        return math.sqrt(sq) if sq < math.inf else math.inf


def _kernel_reads(arr: np.ndarray) -> bool:
    """Whether the kernel takes this array as it is: the statistics' test (float32, not empty), and C-contiguous."""
    return probes._kernel_for(arr) and arr.flags.c_contiguous

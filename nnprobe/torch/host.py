"""A CPU step's statistics: NumPy views of the step's tensors, read by nnprobe.probes.statistics.

A CPU tensor's `.numpy()` shares its memory, so the probe reads the very arrays PyTorch computed
with the engine `train` and `nnprobe.Recorder` use (the one-pass C kernel where it is built):
no copy, no torch launch per statistic, no host transfer. A finiteness check is one dot product
(a finite sum of squares proves every entry finite; only a non-finite one is scanned entry by
entry, so a huge but finite tensor is never named non-finite). The CUDA path is nnprobe.torch.stats.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from nnprobe.probes import statistics

#: dtypes NumPy can view; anything else (bfloat16) is widened to float32, a copy
_VIEWABLE = (torch.float32, torch.float64, torch.float16)


def view(t: torch.Tensor) -> np.ndarray:
    """The tensor as a NumPy array: a view of a float32/float64/float16 CPU tensor, else a float32 copy."""
    if t.is_cpu and t.dtype in _VIEWABLE:
        return t.numpy(force=True)  # detached; the same memory for a real CPU tensor
    t = t.detach()
    if t.dtype not in _VIEWABLE:
        t = t.float()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.numpy()


def matrix(t: torch.Tensor, unit_dim: int) -> np.ndarray:
    """z or a as (rows, units): a view for a (batch, units) tensor; a convolution's channels moved last (a copy)."""
    if t.dim() == 2 and unit_dim in (-1, 1):
        return view(t)
    if t.dim() < 2:
        return view(t).reshape(1, -1)
    t = t.detach()
    return view(t.movedim(unit_dim, -1).reshape(-1, t.shape[unit_dim]))


def quiet() -> np.errstate:
    """NumPy's floating-point warnings off: NaN and inf are data here, and a dot product over huge
    finite values overflows on the way to proving them finite."""
    return np.errstate(all="ignore")


def finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite: one dot product, an entry-by-entry scan only when that overflows."""
    with quiet():
        return statistics.is_finite(view(t))


def grad_sq(g: torch.Tensor) -> float:
    """A gradient's sum of squares (its share of the global norm); exact in float64 when the dot product
    overflowed on finite entries; NaN when an entry is not finite. (Called inside quiet().)"""
    arr = view(g)
    sq = statistics.sq_norm(arr)
    if sq < math.inf:
        return sq
    got = statistics.gradient_stats(arr, False)
    return math.nan if got["nonfinite"] or got["norm"] is None else got["norm"] ** 2


def weight(w: np.ndarray, distribution: bool) -> dict:
    """W's object: its norm (and at step 0 its distribution), over the finite entries, and the non-finite count."""
    return statistics.weight_stats(w) if distribution else statistics.weight_norm_stats(w)


class Views:
    """NumPy views of the model's parameters, made once: a parameter keeps its memory from step to step
    (the optimizer updates it in place); a new view is made when its storage changes (`p.data = ...`,
    `model.to(...)`)."""

    def __init__(self) -> None:
        self._views: dict[int, tuple[int, int, np.ndarray]] = {}

    def __call__(self, p: torch.Tensor) -> np.ndarray:
        got = self._views.get(id(p))
        ptr = p.data_ptr()
        if got is None or got[0] != ptr or got[1] != p.numel():
            got = self._views[id(p)] = (ptr, p.numel(), view(p))
        return got[2]


def probabilities(p: torch.Tensor) -> dict:
    """What a loss takes the log of, counted exactly (`loss_in`)."""
    return statistics.probability_stats(view(p), 0.0, True)


# ---------------------------------------------------------------- a full step's forward statistics


def preactivation(z: torch.Tensor, unit_dim: int, saturation: Optional[float]) -> tuple[dict, int]:
    """z's object (with `sat_frac`) and its dead units (<= 0 for every example and position)."""
    return statistics.preactivation_stats(matrix(z, unit_dim), saturation)


def activation(a: torch.Tensor, unit_dim: int, dead: int) -> dict:
    """a's object; `dead` comes from its layer's z."""
    return statistics.activation_stats(matrix(a, unit_dim), dead)


def forward(z: torch.Tensor, a: torch.Tensor, unit_dim: int, kind: str,
            saturation: Optional[float]) -> tuple[dict, dict]:
    """z's and a's objects from shared passes: `kind` "relu" (a = max(z, 0), from nn.ReLU), "identity"
    (a is z) or "other" (probes.statistics.forward_stats)."""
    zm = matrix(z, unit_dim)
    am = zm if kind == "identity" else matrix(a, unit_dim)
    return statistics.forward_stats(zm, am, kind, saturation)


def gradient(g: torch.Tensor, with_zero_frac: bool) -> tuple[dict, float]:
    """A gradient's object (norm, max |entry|, non-finite count, [zero fraction]) and its sum of squares,
    from one pass where the kernel runs."""
    got, sq = statistics.gradient_stats_with_sq(view(g), with_zero_frac)
    if not sq < math.inf:  # a float32 sum of squares that overflowed on finite entries: the exact one
        sq = math.nan if got["nonfinite"] or got["norm"] is None else got["norm"] ** 2
    return got, sq


def _labels(t: torch.Tensor) -> np.ndarray:
    return view(t) if t.is_floating_point() else t.detach().cpu().numpy()


def accuracy(out: torch.Tensor, targets: torch.Tensor, from_logits: bool) -> Optional[float]:
    """The fraction of the batch predicted right: argmax of `out` against integer or one-hot targets, or a
    0.5 (probabilities) / 0 (logits) threshold for one output unit; None when the shapes do not pair up.
    (Plain NumPy on the arrays: a handful of torch launches would cost more than the batch is big.)"""
    o, t = _labels(out), _labels(targets)
    if o.ndim == 0 or t.ndim == 0 or o.shape[0] != t.shape[0]:
        return None
    if o.ndim >= 2 and o.shape[-1] > 1:
        pred = o.argmax(axis=-1)
        labels = t.argmax(axis=-1) if t.ndim == o.ndim else t
    else:
        n = o.shape[0]
        pred = (o.reshape(n, -1)[:, 0] >= (0.0 if from_logits else 0.5)).astype(np.int64)
        labels = t.reshape(n, -1)[:, 0].astype(np.int64)
    if pred.shape != labels.shape:
        return None
    return float(np.mean(pred == labels.astype(pred.dtype)))

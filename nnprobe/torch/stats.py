"""Per-tensor statistics of a PyTorch step, taken on the tensor's own device without a host round trip.

Each function returns a small float64 vector (a fixed layout per kind, below) built from batched
reductions; the probe concatenates the vectors of a step and moves them to the host once, where
`to_dict` turns each into the log's per-tensor object (docs/log-schema.md). The fast layouts are
right only for finite tensors; a vector whose moments came out non-finite is recomputed from the
tensor itself by nnprobe.probes.statistics (exact NaN/inf counts, moments over the finite entries),
which happens only on the step where something went non-finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from nnprobe.probes import statistics as host

_F64 = torch.float64


def check(x: torch.Tensor) -> torch.Tensor:
    """The every-step non-finite check: one float64 sum, which is finite exactly when every entry is.

    Accumulating a float32/float16 tensor in float64 cannot overflow for finite entries; a float64
    tensor whose finite entries sum past 1.8e308 is reported as non-finite and then counted exactly.
    """
    return x.detach().sum(dtype=_F64)


def units_max(z: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Each unit's largest pre-activation over the batch (and any spatial positions)."""
    if z.dim() < 2:
        return z.reshape(1, -1).amax(1)
    return z.movedim(unit_dim, 0).reshape(z.shape[unit_dim], -1).amax(1)


def forward_vector(x: torch.Tensor, unit_dim: int, saturation: Optional[float]) -> torch.Tensor:
    """[mean, std, min, max, zeros, dead units, saturated] of a pre-activation or activation."""
    x = x.detach()
    var, mean = torch.var_mean(x, correction=0)
    mn, mx = torch.aminmax(x)
    zeros = (x == 0).sum()
    dead = (units_max(x, unit_dim) <= 0).sum()
    sat = (x.abs() > saturation).sum() if saturation is not None else zeros.new_zeros(())
    parts = [mean, var.sqrt(), mn, mx, zeros, dead, sat]
    return torch.stack([p.to(_F64) for p in parts])


def gradient_vector(g: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """[norm, max |entry|, zeros] of a parameter gradient, given its norm (taken once for grad_norm)."""
    g = g.detach()
    mn, mx = torch.aminmax(g)
    maxabs = torch.maximum(mn.abs(), mx.abs())
    return torch.stack([norm.to(_F64), maxabs.to(_F64), (g == 0).sum().to(_F64)])


def weight_vector(w: torch.Tensor, norm: torch.Tensor, distribution: bool) -> torch.Tensor:
    """[norm] or, for the initial weights, [norm, mean, std, min, max, positives]."""
    w = w.detach()
    if not distribution:
        return norm.to(_F64).reshape(1)
    var, mean = torch.var_mean(w, correction=0)
    mn, mx = torch.aminmax(w)
    parts = [norm, mean, var.sqrt(), mn, mx, (w > 0).sum()]
    return torch.stack([p.to(_F64) for p in parts])


def bias_vector(b: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """[norm, mean] of a bias."""
    return torch.stack([norm.to(_F64), b.detach().mean(dtype=_F64)])


def probability_vector(p: torch.Tensor) -> torch.Tensor:
    """[min, max, exactly 0, exactly 1, outside [0, 1]] of the probabilities a loss takes the log of."""
    p = p.detach()
    mn, mx = torch.aminmax(p)
    parts = [mn, mx, (p == 0).sum(), (p == 1).sum(), ((p < 0) | (p > 1)).sum()]
    return torch.stack([q.to(_F64) for q in parts])


# ---------------------------------------------------------------- on the host


def _finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _numpy(x: torch.Tensor):
    return x.detach().to("cpu", torch.float64 if x.dtype == torch.bfloat16 else x.dtype).numpy()


def _exact(fn, *args):
    """nnprobe's NumPy statistics of a non-finite tensor (overflow in their sums of squares is expected)."""
    with np.errstate(all="ignore"):
        return fn(*args)


def forward_dict(v: list[float], kind: str, x: torch.Tensor, saturation: Optional[float],
                 dead: Optional[int] = None) -> dict:
    """The `z` (kind "z") or `a` object; `dead` for an `a` comes from its layer's z."""
    mean, std, mn, mx, zeros, dead_here, sat = v
    n = x.numel()
    if _finite([mean, std, mn, mx]):
        out = {"mean": mean, "std": std, "min": mn, "max": mx, "nan": 0, "posinf": 0, "neginf": 0}
    else:
        out = _exact(host.tensor_stats, _numpy(x))
    if kind == "z":
        out["sat_frac"] = None if saturation is None else sat / n
    else:
        out["zero_frac"] = zeros / n
        out["dead"] = int(dead_here if dead is None else dead)
    return out


def dead_units(v: list[float]) -> int:
    return int(v[5])


def gradient_dict(v: list[float], g: torch.Tensor, with_zero_frac: bool) -> dict:
    norm, maxabs, zeros = v
    n = g.numel()
    if _finite([norm, maxabs]):
        out = {"norm": norm, "maxabs": maxabs, "nonfinite": 0}
        if with_zero_frac:
            out["zero_frac"] = zeros / n
        return out
    return _exact(host.gradient_stats, _numpy(g), with_zero_frac)


def weight_dict(v: list[float], w: torch.Tensor) -> dict:
    if not _finite(v):
        full = _exact(host.weight_stats, _numpy(w))
        return full if len(v) > 1 else {"norm": full["norm"], "nonfinite": full["nonfinite"]}
    if len(v) == 1:
        return {"norm": v[0], "nonfinite": 0}
    norm, mean, std, mn, mx, positives = v
    n = w.numel()
    return {"norm": norm, "mean": mean, "std": std, "min": mn, "max": mx, "pos_frac": positives / n, "nonfinite": 0}


def bias_dict(v: list[float], b: torch.Tensor) -> dict:
    if _finite(v):
        return {"norm": v[0], "mean": v[1]}
    return _exact(host.bias_stats, _numpy(b))


def probability_dict(v: list[float], p: torch.Tensor) -> dict:
    mn, mx, zero, one, outside = v
    return {"n": p.numel(), "min": mn, "max": mx, "n_zero": int(zero), "n_one": int(one), "n_outside": int(outside),
            "n_below_eps": 0}


@dataclass
class Pending:
    """One statistics vector waiting for the step's single transfer, and what turns it into its dict."""

    vector: torch.Tensor
    finish: Callable[[list[float]], object]


class Batch:
    """The statistics of one step: vectors queued on the device, moved to the host together."""

    def __init__(self) -> None:
        self.items: list[Pending] = []

    def add(self, vector: torch.Tensor, finish: Callable[[list[float]], object]) -> None:
        self.items.append(Pending(vector, finish))

    def resolve(self, head: Optional[torch.Tensor] = None) -> list[float]:
        """One device-to-host copy of `head` and every queued vector; runs each `finish`; returns `head`'s values."""
        vectors = ([head.to(_F64).reshape(-1)] if head is not None else []) + [p.vector for p in self.items]
        if not vectors:
            return []
        values = torch.cat([v.to(vectors[0].device) for v in vectors]).tolist()
        n_head = vectors[0].numel() if head is not None else 0
        at = n_head
        for p in self.items:
            k = p.vector.numel()
            p.finish(values[at:at + k])
            at += k
        self.items = []
        return values[:n_head]

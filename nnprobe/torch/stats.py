"""Per-tensor statistics of a PyTorch step, taken on the tensor's own device without a host round trip.

Each `*_parts` function returns 0-d tensors (a fixed layout per kind) from BLAS and plain
reductions; `Batch` moves every part of a step to the host in one copy, where the `*_dict`
functions turn them into the log's per-tensor objects (docs/log-schema.md). The fast layouts are
right only for finite tensors; a tensor whose values came out non-finite is recounted from the
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
_NATIVE = (torch.float32, torch.float64)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """The tensor as one float32/float64 vector (a view where the layout allows)."""
    x = x.detach()
    return (x if x.dtype in _NATIVE else x.float()).reshape(-1)


def units_max(z: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Each unit's largest pre-activation over the batch (and any spatial positions)."""
    z = z.detach()
    if z.dim() < 2:
        return z.reshape(1, -1).amax(1)
    return z.movedim(unit_dim, 0).reshape(z.shape[unit_dim], -1).amax(1)


def _count_above(f: torch.Tensor, threshold: float) -> torch.Tensor:
    """How many entries exceed `threshold` (NaN does not), without a boolean temporary (slow on CPU)."""
    return torch.count_nonzero(torch.relu(torch.nan_to_num(f - threshold, nan=0.0)))


#: read-only ones vectors by (size, dtype, device): a sum as a BLAS dot product
_ONES: dict[tuple, torch.Tensor] = {}


def _ones(f: torch.Tensor) -> torch.Tensor:
    key = (f.numel(), f.dtype, f.device)
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = torch.ones(f.numel(), dtype=f.dtype, device=f.device)
    return ones


def _moments(f: torch.Tensor) -> list[torch.Tensor]:
    """[sum, sum of squares, min, max]: two BLAS dot products and one min/max reduction.

    On CPU a dot product runs on the calling thread, where a sum, a variance or a comparison goes
    through the intra-op thread pool: 5-10x slower at these sizes on a machine with other work
    (bench/torch_probe.py). forward_dict recomputes the moments exactly where the sums lose digits.
    """
    mn, mx = torch.aminmax(f)
    return [torch.dot(f, _ones(f)), torch.dot(f, f), mn, mx]


def forward_parts(x: torch.Tensor, kind: str, unit_dim: int, saturation: Optional[float]) -> list[torch.Tensor]:
    """z: moments, dead units, saturated entries; a: moments and non-zero entries (reductions on the device)."""
    f = _flat(x)
    if f.numel() == 0:
        return []
    parts = _moments(f)
    if kind == "z":
        parts.append((units_max(x, unit_dim) <= 0).sum())
        if saturation is not None:
            parts.append(_count_above(f.abs(), saturation))
    else:
        parts.append(torch.count_nonzero(f))
    return parts


def gradient_parts(g: torch.Tensor, with_zero_frac: bool) -> list[torch.Tensor]:
    """[non-zero entries] of a weight gradient, [] for a bias's: its norm and max |entry| come from fused
    reductions over every gradient of the step."""
    return [torch.count_nonzero(_flat(g))] if with_zero_frac and g.numel() else []


def weight_parts(w: torch.Tensor, distribution: bool) -> list[torch.Tensor]:
    """[] or, for the initial weights, moments and positive entries (the norm comes from one fused reduction)."""
    if not distribution:
        return []
    f = _flat(w)
    return _moments(f) + [_count_above(f, 0.0)] if f.numel() else []


def bias_parts(b: torch.Tensor) -> list[torch.Tensor]:
    """[sum] of a bias (its norm comes from one fused reduction)."""
    f = _flat(b)
    return [torch.dot(f, _ones(f))]


def probability_parts(p: torch.Tensor) -> list[torch.Tensor]:
    """[min, max, exactly 0, exactly 1, outside [0, 1]] of the probabilities a loss takes the log of."""
    f = _flat(p)
    if f.numel() == 0:
        return []
    n = f.numel()
    return [f.amin(), f.amax(), n - torch.count_nonzero(f), n - torch.count_nonzero(f - 1),
            _count_above(-f, 0.0) + _count_above(f, 1.0)]


# ---------------------------------------------------------------- on the host


def _finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _numpy(x: torch.Tensor):
    return x.detach().to("cpu", torch.float64 if x.dtype == torch.bfloat16 else x.dtype).numpy()


def _exact(fn, *args):
    """nnprobe's NumPy statistics of a non-finite tensor (overflow in their sums of squares is expected)."""
    with np.errstate(all="ignore"):
        return fn(*args)


#: var < _CANCEL * mean of squares: sum-of-squares minus squared mean has lost digits (as probes.statistics)
_CANCEL = 1.0 / 16.0


def _moments_dict(v: list[float], n: int) -> Optional[dict]:
    """mean, std, min, max from _moments' values; None when any is non-finite or the variance lost its digits
    (the exact path decides)."""
    total, ss, mn, mx = v
    if not _finite([total, ss, mn, mx]):
        return None
    mean = total / n
    var = ss / n - mean * mean
    if var < _CANCEL * (ss / n):
        return None
    return {"mean": mean, "std": math.sqrt(var), "min": mn, "max": mx}


def forward_dict(v: list[float], kind: str, x: torch.Tensor, saturation: Optional[float],
                 dead: Optional[int] = None) -> dict:
    """The `z` (kind "z") or `a` object; `dead` for an `a` comes from its layer's z."""
    n = x.numel()
    if n == 0:
        out = {"mean": None, "std": None, "min": None, "max": None, "nan": 0, "posinf": 0, "neginf": 0}
        return {**out, "sat_frac": None} if kind == "z" else {**out, "zero_frac": 0.0, "dead": dead or 0}
    moments = _moments_dict(v[:4], n)
    if moments is not None:
        out = {**moments, "nan": 0, "posinf": 0, "neginf": 0}
    else:
        out = _exact(host.tensor_stats, _numpy(x))
    if kind == "z":
        out["sat_frac"] = None if saturation is None else v[5] / n
    else:
        out["zero_frac"] = (n - v[4]) / n
        out["dead"] = int(dead or 0)
    return out


def dead_units(v: list[float]) -> int:
    """The dead-unit count of a z's values (forward_parts' layout)."""
    return int(v[4]) if len(v) > 4 else 0


def gradient_dict(v: list[float], g: torch.Tensor, norm: float, maxabs: float, with_zero_frac: bool) -> dict:
    n = g.numel()
    if n == 0:
        return {"norm": 0.0, "maxabs": None, "nonfinite": 0, **({"zero_frac": 0.0} if with_zero_frac else {})}
    if not _finite([norm, maxabs]):
        return _exact(host.gradient_stats, _numpy(g), with_zero_frac)
    out = {"norm": norm, "maxabs": maxabs, "nonfinite": 0}
    if with_zero_frac:
        out["zero_frac"] = (n - v[0]) / n
    return out


def weight_dict(v: list[float], w: torch.Tensor, norm: float) -> dict:
    n = w.numel()
    if not math.isfinite(norm) or (v and _moments_dict(v[:4], n) is None):
        full = _exact(host.weight_stats, _numpy(w))
        return full if v else {"norm": full["norm"], "nonfinite": full["nonfinite"]}
    if not v:
        return {"norm": norm, "nonfinite": 0}
    return {"norm": norm, **_moments_dict(v[:4], n), "pos_frac": v[4] / n, "nonfinite": 0}


def bias_dict(v: list[float], b: torch.Tensor, norm: float) -> dict:
    if _finite([norm] + v) and b.numel():
        return {"norm": norm, "mean": v[0] / b.numel()}
    return _exact(host.bias_stats, _numpy(b))


def probability_dict(v: list[float], p: torch.Tensor) -> Optional[dict]:
    if not v:
        return None
    mn, mx, zero, one, outside = v
    return {"n": p.numel(), "min": mn, "max": mx, "n_zero": int(zero), "n_one": int(one), "n_outside": int(outside),
            "n_below_eps": 0}


@dataclass
class Pending:
    """Scalars waiting for the step's single transfer, and what turns their values into a dict."""

    parts: list[torch.Tensor]
    finish: Callable[[list[float]], object]


class Batch:
    """The statistics of one step: 0-d tensors queued on the device, moved to the host together.

    Scalars of one dtype are stacked into one tensor (a few stacks in all, not one op per scalar),
    converted to float64 and concatenated: one device-to-host copy however many there are.
    """

    def __init__(self) -> None:
        self.items: list[Pending] = []

    def add(self, parts: list[torch.Tensor], finish: Callable[[list[float]], object]) -> None:
        self.items.append(Pending(list(parts), finish))

    def resolve(self, head: Optional[list[torch.Tensor]] = None) -> list[float]:
        """One transfer of `head` and every queued part; runs each `finish`; returns `head`'s values."""
        head = list(head or [])
        flat = head + [t for p in self.items for t in p.parts]
        values = transfer(flat)
        at = len(head)
        items, self.items = self.items, []
        for p in items:
            k = len(p.parts)
            p.finish(values[at:at + k])
            at += k
        return values[:len(head)]


def transfer(scalars: list[torch.Tensor]) -> list[float]:
    """The values of 0-d tensors as Python floats, in order, with one device-to-host copy (a stack per dtype)."""
    if not scalars:
        return []
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(scalars):
        groups.setdefault((t.dtype, t.device), []).append(i)
    device = scalars[0].device
    order: list[int] = []
    stacked = []
    for (_, dev), idx in groups.items():
        order.extend(idx)
        stacked.append(torch.stack([scalars[i] for i in idx]).to(device=device, dtype=_F64))
    values = torch.cat(stacked).tolist() if len(stacked) > 1 else stacked[0].tolist()
    out = [0.0] * len(scalars)
    for position, i in enumerate(order):
        out[i] = values[position]
    return out

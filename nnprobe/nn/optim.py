"""Optimizers that update parameters in place and report the norm of the update they applied.

The update norm is what the update-ratio probe needs (||W_after - W_before|| / ||W_before||);
it is taken from the delta array the update computes anyway, so no copy of W is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


def _sq(x: np.ndarray) -> float:
    flat = x.ravel()
    return float(np.dot(flat, flat))


# below these, ||delta||^2 cannot overflow in the parameter's dtype, so lr * ||g|| equals what a pass would find
_SAFE_NORM = {"f": math.sqrt(float(np.finfo(np.float32).max)) / 4, "d": math.sqrt(float(np.finfo(np.float64).max)) / 4}


class Optimizer:
    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.t = 0

    def step(self, grads: list[np.ndarray], want_norms: bool = True,
             grad_sqs: Optional[list[float]] = None) -> Optional[list[float]]:
        """Apply one update; return ||delta|| per parameter when asked.

        grad_sqs: the squared norms of `grads` when the caller has them (the probes do), which
        lets SGD report lr * ||g|| instead of another pass over the update.
        """
        self.t += 1
        norms: list[float] = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            delta = self._delta(i, p, g)
            p += delta
            if want_norms:
                norm = self._known_norm(p, grad_sqs[i]) if grad_sqs is not None else None
                norms.append(math.sqrt(_sq(delta)) if norm is None else norm)
        return norms if want_norms else None

    def _delta(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _known_norm(self, p: np.ndarray, grad_sq: float) -> Optional[float]:
        """||delta|| from ||g||^2 without touching the arrays, or None when the rule cannot say."""
        return None


class SGD(Optimizer):
    """p <- p - lr g"""

    def __init__(self, params, lr):
        super().__init__(params, lr)
        self._buf: list[Optional[np.ndarray]] = [None] * len(params)

    def _delta(self, i, p, g):
        """-lr g, written into a scratch array per parameter that is allocated once and reused every step."""
        buf = self._buf[i]
        if buf is None or buf.shape != g.shape or buf.dtype != g.dtype:
            buf = self._buf[i] = np.empty_like(g * -self.lr)
        return np.multiply(g, -self.lr, out=buf)

    def _known_norm(self, p, grad_sq):
        """||lr g|| = lr ||g||, exact up to rounding, while no entry of lr g can overflow (float32/64 only)."""
        if p.dtype.char not in "fd" or not math.isfinite(grad_sq):
            return None
        norm = self.lr * math.sqrt(grad_sq)
        return norm if norm < _SAFE_NORM[p.dtype.char] else None


class Momentum(Optimizer):
    """v <- mu v - lr g;  p <- p + v   (classical momentum)"""

    def __init__(self, params, lr, momentum):
        super().__init__(params, lr)
        self.mu = momentum
        self.v = [np.zeros_like(p) for p in params]

    def _delta(self, i, p, g):
        v = self.v[i]
        v *= self.mu
        v -= self.lr * g
        return v


class Nesterov(Optimizer):
    """v <- mu v + g;  p <- p - lr (g + mu v)   (the form PyTorch uses)"""

    def __init__(self, params, lr, momentum):
        super().__init__(params, lr)
        self.mu = momentum
        self.v = [np.zeros_like(p) for p in params]

    def _delta(self, i, p, g):
        v = self.v[i]
        v *= self.mu
        v += g
        return (g + self.mu * v) * -self.lr


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g;  s <- b2 s + (1-b2) g^2;  p <- p - lr m_hat / (sqrt(s_hat) + eps)"""

    def __init__(self, params, lr, beta1, beta2, eps):
        super().__init__(params, lr)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.s = [np.zeros_like(p) for p in params]

    def _delta(self, i, p, g):
        m, s = self.m[i], self.s[i]
        m *= self.b1
        m += (1 - self.b1) * g
        s *= self.b2
        s += (1 - self.b2) * (g * g)
        m_hat_scale = self.lr / (1 - self.b1**self.t)
        s_hat = s / (1 - self.b2**self.t)
        return m * -m_hat_scale / (np.sqrt(s_hat) + self.eps)


class RMSprop(Optimizer):
    """s <- b2 s + (1-b2) g^2;  p <- p - lr g / (sqrt(s) + eps)   (decay = optimizer.beta2)"""

    def __init__(self, params, lr, beta2, eps):
        super().__init__(params, lr)
        self.b2, self.eps = beta2, eps
        self.s = [np.zeros_like(p) for p in params]

    def _delta(self, i, p, g):
        s = self.s[i]
        self._accumulate(s, g)
        return g * -self.lr / (np.sqrt(s) + self.eps)

    def _accumulate(self, s, g):
        s *= self.b2
        s += (1 - self.b2) * (g * g)


class Adagrad(RMSprop):
    """s <- s + g^2;  p <- p - lr g / (sqrt(s) + eps)   (Duchi et al. 2011; torch.optim.Adagrad's form with
    lr_decay 0 and the accumulator starting at 0; its eps defaults to 1e-10, optimizer.eps to 1e-8)"""

    def __init__(self, params, lr, eps):
        super().__init__(params, lr, None, eps)

    def _accumulate(self, s, g):
        s += g * g


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": lambda params, c: SGD(params, c.lr),
    "momentum": lambda params, c: Momentum(params, c.lr, c.momentum),
    "nesterov": lambda params, c: Nesterov(params, c.lr, c.momentum),
    "adam": lambda params, c: Adam(params, c.lr, c.beta1, c.beta2, c.eps),
    "rmsprop": lambda params, c: RMSprop(params, c.lr, c.beta2, c.eps),
    "adagrad": lambda params, c: Adagrad(params, c.lr, c.eps),
}


def make_optimizer(params: list[np.ndarray], config) -> Optimizer:
    """config: the `optimizer:` section."""
    return OPTIMIZERS[config.kind](params, config)


def global_norm(arrays: list[np.ndarray]) -> float:
    """sqrt(sum of every entry squared) over all arrays: finite whenever the true norm is.

    The norm the clip uses, whatever the probes do, so training never depends on how it is
    observed. Accumulated in float64 (float32 squares cannot overflow there); when float64 squares
    overflow (entries above ~1.3e154) the entries are divided by the largest |entry| first and the
    root scaled back. inf if an entry is inf, NaN if one is NaN.
    """
    sq = 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below
        for a in arrays:
            flat = a.ravel().astype(np.float64, copy=False)
            sq += float(np.dot(flat, flat))
    if math.isfinite(sq):
        return math.sqrt(sq)
    peaks = [float(np.max(np.abs(a))) for a in arrays if a.size]
    if any(math.isnan(p) for p in peaks):
        return math.nan
    peak = max(peaks)
    if peak == math.inf:
        return math.inf
    scaled = 0.0
    for a in arrays:
        flat = a.ravel().astype(np.float64) / peak
        scaled += float(np.dot(flat, flat))
    return peak * math.sqrt(scaled)  # inf only when the norm exceeds float64's range


@dataclass(frozen=True)
class Clip:
    """What clip_by_global_norm found and did: the gradients' global norm and the factor applied (1.0: none)."""

    norm: float
    factor: float


def clip_by_global_norm(grads: list[np.ndarray], max_norm: float) -> Clip:
    """Scale the gradients in place by max_norm / ||g|| when their global norm exceeds max_norm.

    ||g|| is global_norm's. The factor has no + 1e-6 in the denominator (PyTorch's clip_grad_norm_
    divides by ||g|| + 1e-6); non-finite gradients are left as they are for the nonfinite detector
    (PyTorch would scale them by max_norm / inf = 0, or to NaN).
    """
    norm = global_norm(grads)
    if not math.isfinite(norm) or norm <= max_norm:
        return Clip(norm, 1.0)
    factor = max_norm / norm
    for g in grads:
        g *= factor
    return Clip(norm, factor)

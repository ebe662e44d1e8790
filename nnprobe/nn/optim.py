"""Optimizers that update parameters in place and report the norm of the update they applied.

The update norm is what the update-ratio probe needs (||W_after - W_before|| / ||W_before||);
it is taken from the delta array the update computes anyway, so no copy of W is kept.
"""

from __future__ import annotations

import math
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
        s *= self.b2
        s += (1 - self.b2) * (g * g)
        return g * -self.lr / (np.sqrt(s) + self.eps)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": lambda params, c: SGD(params, c.lr),
    "momentum": lambda params, c: Momentum(params, c.lr, c.momentum),
    "nesterov": lambda params, c: Nesterov(params, c.lr, c.momentum),
    "adam": lambda params, c: Adam(params, c.lr, c.beta1, c.beta2, c.eps),
    "rmsprop": lambda params, c: RMSprop(params, c.lr, c.beta2, c.eps),
}


def make_optimizer(params: list[np.ndarray], config) -> Optimizer:
    """config: the `optimizer:` section."""
    return OPTIMIZERS[config.kind](params, config)


def clip_by_global_norm(grads: list[np.ndarray], max_norm: float, norm: float) -> bool:
    """Scale the gradients in place so their global norm is at most max_norm; True if clipped."""
    if not math.isfinite(norm) or norm <= max_norm:
        return False
    factor = max_norm / norm
    for g in grads:
        g *= factor
    return True

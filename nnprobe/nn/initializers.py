"""Weight and bias initializers, including the ones hand-written code uses by accident.

`uniform` is U[0, 1) exactly as `np.random.rand` draws it: all weights positive, the
initialisation of the first seed case. Fan-in rules: Glorot & Bengio (2010) for xavier,
He et al. (2015) for he, LeCun et al. (1998) for lecun.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

WeightInit = Callable[[np.random.Generator, int, int], np.ndarray]


def _uniform(rng, fan_in, fan_out):
    return rng.random((fan_in, fan_out))


def _normal(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out))


def _xavier_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def _xavier_normal(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / (fan_in + fan_out))


def _he_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def _he_normal(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)


def _lecun_normal(rng, fan_in, fan_out):
    return rng.standard_normal((fan_in, fan_out)) * math.sqrt(1.0 / fan_in)


def _zeros(rng, fan_in, fan_out):
    return np.zeros((fan_in, fan_out))


WEIGHT_INITS: dict[str, WeightInit] = {
    "uniform": _uniform,
    "normal": _normal,
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
    "lecun_normal": _lecun_normal,
    "zeros": _zeros,
}

BIAS_INITS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "zeros": lambda rng, n: np.zeros(n),
    "uniform": lambda rng, n: rng.random(n),
    "normal": lambda rng, n: rng.standard_normal(n),
}


def init_weights(name: str, rng: np.random.Generator, fan_in: int, fan_out: int, scale: float, dtype) -> np.ndarray:
    try:
        draw = WEIGHT_INITS[name]
    except KeyError:
        raise ValueError(f"unknown init {name!r}; valid: {', '.join(WEIGHT_INITS)}") from None
    return (draw(rng, fan_in, fan_out) * scale).astype(dtype)


def init_bias(spec: Union[str, float], rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return np.full(n, spec, dtype=dtype)
    try:
        return BIAS_INITS[spec](rng, n).astype(dtype)
    except KeyError:
        raise ValueError(f"unknown bias_init {spec!r}; valid: {', '.join(BIAS_INITS)} or a number") from None

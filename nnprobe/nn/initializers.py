"""Weight and bias initializers, including the ones hand-written code uses by accident.

`uniform` is U[0, 1) exactly as `np.random.rand` draws it: all weights positive, the
initialisation of the first seed case. Fan-in rules: Glorot & Bengio (2010) for xavier
(Keras: glorot), He et al. (2015) for he, LeCun et al. (1998) for lecun. The truncated-normal
rules are Keras's VarianceScaling(distribution="truncated_normal"), which is what Keras's own
glorot_normal, he_normal and lecun_normal draw.

Every rule draws an array of a given shape from (fan_in, fan_out), so the same names serve
biases: a bias of n units is drawn with fan_in = fan_out = n, as Keras computes the fans of a
1-D shape. A range (anything with `low` and `high`, such as {low: -0.05, high: 0.05} in the
config) draws U(low, high).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Union

import numpy as np

#: (rng, shape, fan_in, fan_out) -> float64 array of that shape
Draw = Callable[[np.random.Generator, tuple[int, ...], int, int], np.ndarray]

#: standard deviation of N(0, 1) truncated to [-2, 2]: Keras divides by it so that the truncated draw keeps
#: the rule's variance
TRUNCATED_STD = 0.87962566103423978


def truncated_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) with every draw outside [-2, 2] drawn again (TensorFlow's truncated_normal, torch's trunc_normal_)."""
    x = rng.standard_normal(shape)
    outside = np.abs(x) > 2
    while outside.any():
        x[outside] = rng.standard_normal(int(np.count_nonzero(outside)))
        outside = np.abs(x) > 2
    return x


def _scaled_normal(variance: Callable[[int, int], float]) -> Draw:
    return lambda rng, shape, fan_in, fan_out: rng.standard_normal(shape) * math.sqrt(variance(fan_in, fan_out))


def _scaled_truncated(variance: Callable[[int, int], float]) -> Draw:
    return lambda rng, shape, fan_in, fan_out: (truncated_standard_normal(rng, shape)
                                                * (math.sqrt(variance(fan_in, fan_out)) / TRUNCATED_STD))


def _xavier(fan_in: int, fan_out: int) -> float:
    return 2.0 / (fan_in + fan_out)


def _he(fan_in: int, fan_out: int) -> float:
    return 2.0 / fan_in


def _lecun(fan_in: int, fan_out: int) -> float:
    return 1.0 / fan_in


def _symmetric_uniform(limit: Callable[[int, int], float]) -> Draw:
    return lambda rng, shape, fan_in, fan_out: rng.uniform(-limit(fan_in, fan_out), limit(fan_in, fan_out), shape)


WEIGHT_INITS: dict[str, Draw] = {
    "uniform": lambda rng, shape, fan_in, fan_out: rng.random(shape),
    "normal": lambda rng, shape, fan_in, fan_out: rng.standard_normal(shape),
    "truncated_normal": lambda rng, shape, fan_in, fan_out: truncated_standard_normal(rng, shape),
    "xavier_uniform": _symmetric_uniform(lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out))),
    "xavier_normal": _scaled_normal(_xavier),
    "xavier_truncated_normal": _scaled_truncated(_xavier),
    "he_uniform": _symmetric_uniform(lambda fan_in, fan_out: math.sqrt(6.0 / fan_in)),
    "he_normal": _scaled_normal(_he),
    "he_truncated_normal": _scaled_truncated(_he),
    "lecun_uniform": _symmetric_uniform(lambda fan_in, fan_out: math.sqrt(3.0 / fan_in)),
    "lecun_normal": _scaled_normal(_lecun),
    "lecun_truncated_normal": _scaled_truncated(_lecun),
    "zeros": lambda rng, shape, fan_in, fan_out: np.zeros(shape),
}

#: an init name, a range with `low` and `high`, or (biases only) a constant
InitSpec = Union[str, Any]


def _draw(spec: InitSpec, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
          what: str, valid_extra: str = "") -> np.ndarray:
    if hasattr(spec, "low") and hasattr(spec, "high"):
        return rng.uniform(spec.low, spec.high, shape)
    try:
        draw = WEIGHT_INITS[spec]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {spec!r}; valid: {', '.join(WEIGHT_INITS)}, a range "
                         f"{{low, high}}{valid_extra}") from None
    return draw(rng, shape, fan_in, fan_out)


def init_weights(spec: InitSpec, rng: np.random.Generator, fan_in: int, fan_out: int, scale: float,
                 dtype) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix drawn by `spec`, times `scale`, in `dtype`."""
    return (_draw(spec, rng, (fan_in, fan_out), fan_in, fan_out, "init") * scale).astype(dtype)


def init_bias(spec: InitSpec, rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    """n biases: a constant, or drawn by `spec` with fan_in = fan_out = n."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return np.full(n, spec, dtype=dtype)
    return _draw(spec, rng, (n,), n, n, "bias_init", " or a number").astype(dtype)

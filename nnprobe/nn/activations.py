"""Activations: each keeps its function and its derivative side by side, with the formula.

Built-ins receive the cached activation `a` as well as `z`, so derivatives such as sigmoid's
s(1 - s) reuse the forward result instead of recomputing it. `vjp` is what backprop calls:
elementwise activations multiply by the derivative, softmax applies its Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Traits:
    """What the rest of nnprobe knows about an activation, declared once beside its maths.

    Config validation, the detectors (through the layer's activation name in the start record),
    the digest, the init rules, the fixes and docs/activations.md all read these.
    """

    #: "relu" (ReLU, leaky ReLU), "squashing" (bounded, flat at both ends), "smooth" (ELU, GELU,
    #: softplus), "linear" (identity) or "normalizing" (softmax: a distribution over the units)
    family: str
    #: whether its units can die: a unit whose pre-activation is <= 0 for every example is stuck
    #: (0 out, and for ReLU no gradient back). The rule: the ReLU family has dead units; smooth
    #: activations keep a gradient below 0, squashing ones saturate instead (saturated-activations)
    dead_units: bool
    #: the fan-in rule its layer's weights are judged by (poor-init) and suggested by the fixes:
    #: "he" sqrt(2/fan_in) for rectifiers, "xavier" sqrt(2/(fan_in+fan_out)) otherwise
    init_rule: str
    #: where `model.activation` (hidden) and `model.output` (output) may name it
    hidden: bool = True
    output: bool = False


#: the integer type of each float's size, whose bit patterns ReLU.vjp and LeakyReLU.vjp select from
_SAME_SIZE_INT = {np.dtype(np.float16): np.int16, np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
#: up to this many entries np.where's branches cost less than the bit-pattern select's extra NumPy calls
_SMALL_SELECT = 4096


#: every built-in activation by its config name, in the order error messages and docs list them; a class
#: that declares its traits registers itself here when it is defined (Activation.__init_subclass__)
ACTIVATIONS: dict[str, type["Activation"]] = {}


class Activation:
    name: str = ""
    elementwise: bool = True
    #: the flat region: |z| beyond which the derivative is below 1% of its maximum (sigmoid/tanh), else None
    saturation: float | None = None
    #: None for an activation nnprobe did not write (user code): nothing is assumed about it
    traits: Optional[Traits] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("traits") is not None:  # a built-in; user activations declare none
            ACTIVATIONS[cls.name] = cls

    def forward(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, z: np.ndarray, a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
        """dL/dz given dL/da."""
        return grad_a * self.derivative(z, a)

    def __repr__(self) -> str:
        return f"<activation {self.name}>"


class ReLU(Activation):
    """a = max(z, 0);  a' = 1 if z > 0 else 0 (0 at the kink, as most code has it)"""

    name = "relu"
    traits = Traits("relu", dead_units=True, init_rule="he", output=True)

    def forward(self, z):
        return np.maximum(z, 0)

    def derivative(self, z, a):
        return (z > 0).astype(z.dtype)

    def vjp(self, z, a, grad_a):
        """np.where(z > 0, grad_a, 0), bit for bit (NaN, inf and the sign of zero included).

        np.where branches per entry and a ReLU's mask is a coin flip, so it runs many times slower than a
        multiply (docs/performance.md): the float's bit pattern times the 0/1 mask is the entry or +0.0 exactly.
        """
        bits = _SAME_SIZE_INT.get(grad_a.dtype)
        if bits is None or z.shape != grad_a.shape or grad_a.size <= _SMALL_SELECT:
            return np.where(z > 0, grad_a, 0)
        return np.multiply(grad_a.view(bits), z > 0).view(grad_a.dtype)


class LeakyReLU(Activation):
    """a = z if z > 0 else s*z;  a' = 1 if z > 0 else s"""

    name = "leaky_relu"
    traits = Traits("relu", dead_units=True, init_rule="he")

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.slope = float(negative_slope)

    def forward(self, z):
        """np.where(z > 0, z, z * s), bit for bit. For 0 < s < 1 that is max(z, z * s), which NumPy runs
        without a branch per entry (np.where's per-entry branch is many times slower on a random sign)."""
        if 0.0 < self.slope < 1.0:
            return np.maximum(z, z * self.slope)
        return np.where(z > 0, z, z * self.slope)

    def derivative(self, z, a):
        return np.where(z > 0, 1.0, self.slope).astype(z.dtype)

    def vjp(self, z, a, grad_a):
        """np.where(z > 0, grad_a, grad_a * s), bit for bit, as a branch-free select on the bit patterns:
        out = g*s ^ ((g*s ^ g) & mask), mask all ones where z > 0."""
        scaled = grad_a * self.slope
        bits = _SAME_SIZE_INT.get(scaled.dtype)
        if bits is None or z.shape != grad_a.shape or grad_a.dtype != scaled.dtype or scaled.size <= _SMALL_SELECT:
            return np.where(z > 0, grad_a, scaled)
        mask = np.negative((z > 0).view(np.int8), dtype=bits)  # True -> -1: every bit set
        out = scaled.view(bits)
        out ^= (out ^ grad_a.view(bits)) & mask
        return scaled


class Sigmoid(Activation):
    """a = 1 / (1 + exp(-z));  a' = a(1 - a).

    Computed exactly as the textbook formula (and torch.sigmoid) computes it, so both ends saturate
    where hand-written code does: exactly 1.0 above z ~ 36.7 (float64) / 16.6 (float32), and exactly
    0.0 below z ~ -709.8 / -88.7, where exp(-z) overflows to inf. Those exact 0s and 1s are the events
    log-zero catches; the overflow itself is expected and not warned about.
    """

    name = "sigmoid"
    traits = Traits("squashing", dead_units=False, init_rule="xavier", output=True)
    saturation = 2 * math.acosh(10.0)  # s(1-s) = 1/(4 cosh^2(z/2)) < 1% of 1/4  <=>  |z| > 5.986

    def forward(self, z):
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-z))

    def derivative(self, z, a):
        return a * (1 - a)


class Tanh(Activation):
    """a = tanh(z);  a' = 1 - a^2"""

    name = "tanh"
    traits = Traits("squashing", dead_units=False, init_rule="xavier", output=True)
    saturation = math.acosh(10.0)  # 1/cosh^2(z) < 0.01  <=>  |z| > 2.993

    def forward(self, z):
        return np.tanh(z)

    def derivative(self, z, a):
        return 1 - a * a


class ELU(Activation):
    """a = z if z > 0 else exp(z) - 1;  a' = 1 if z > 0 else a + 1   (alpha = 1)"""

    name = "elu"
    traits = Traits("smooth", dead_units=False, init_rule="he")

    def forward(self, z):
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))

    def derivative(self, z, a):
        return np.where(z > 0, 1, a + 1).astype(z.dtype)


_GELU_C = math.sqrt(2 / math.pi)


class GELU(Activation):
    """a = z/2 (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2/pi)  (the tanh approximation,
    torch's GELU(approximate="tanh"); the exact erf form is gelu_erf, up to 4e-4 away);
    a' = (1 + t)/2 + z/2 (1 - t^2) c (1 + 3*0.044715 z^2)."""

    name = "gelu"
    traits = Traits("smooth", dead_units=False, init_rule="he")

    def forward(self, z):
        return 0.5 * z * (1 + np.tanh(_GELU_C * (z + 0.044715 * z**3)))

    def derivative(self, z, a):
        t = np.tanh(_GELU_C * (z + 0.044715 * z**3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * z * z)


_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf ufunc (SciPy's is not a dependency)


class GELUErf(Activation):
    """a = z Phi(z) = z/2 (1 + erf(z / sqrt(2)))  (the exact GELU, torch's default GELU());
    a' = Phi(z) + z phi(z), phi(z) = exp(-z^2/2) / sqrt(2 pi)."""

    name = "gelu_erf"
    traits = Traits("smooth", dead_units=False, init_rule="he")

    @staticmethod
    def _cdf(z):
        return (0.5 * (1 + _erf(z / math.sqrt(2)))).astype(z.dtype)

    def forward(self, z):
        return z * self._cdf(z)

    def derivative(self, z, a):
        return self._cdf(z) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


class Softplus(Activation):
    """a = log(1 + exp(z));  a' = sigmoid(z).

    Exact at every z (torch's softplus returns z itself above its threshold of 20, 2e-9 away)."""

    name = "softplus"
    traits = Traits("smooth", dead_units=False, init_rule="xavier")

    def forward(self, z):
        return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)

    def derivative(self, z, a):
        return Sigmoid().forward(z)


class Identity(Activation):
    """a = z;  a' = 1"""

    name = "identity"
    traits = Traits("linear", dead_units=False, init_rule="xavier", output=True)

    def forward(self, z):
        return z

    def derivative(self, z, a):
        return np.ones_like(z)

    def vjp(self, z, a, grad_a):
        return grad_a


class Softmax(Activation):
    """a_i = exp(z_i - max z) / sum_j exp(z_j - max z) over the units of each example;
    dL/dz = a * (g - sum(g * a)) for g = dL/da (the Jacobian-vector product)."""

    name = "softmax"
    traits = Traits("normalizing", dead_units=False, init_rule="xavier", hidden=False, output=True)
    elementwise = False

    def forward(self, z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def derivative(self, z, a):
        raise TypeError("softmax has no elementwise derivative; use vjp")

    def vjp(self, z, a, grad_a):
        return a * (grad_a - (grad_a * a).sum(axis=1, keepdims=True))


#: what `model.activation` and `model.output` may name (the traits say which)
HIDDEN: dict[str, Callable[..., Activation]] = {n: c for n, c in ACTIVATIONS.items() if c.traits.hidden}
OUTPUT: dict[str, Callable[..., Activation]] = {n: c for n, c in ACTIVATIONS.items() if c.traits.output}


def traits_of(name: Optional[str]) -> Optional[Traits]:
    """A built-in activation's traits by its config name; None for user code or an unknown name."""
    cls = ACTIVATIONS.get(str(name))
    return None if cls is None else cls.traits


def names_where(**wanted) -> tuple[str, ...]:
    """The built-in activations whose traits have the given values, e.g. names_where(family="relu")."""
    return tuple(n for n, c in ACTIVATIONS.items() if all(getattr(c.traits, k) == v for k, v in wanted.items()))


#: activations whose units can die (Traits.dead_units)
RELU_FAMILY = frozenset(names_where(family="relu"))


def hidden_activation(name: str, negative_slope: float = 0.01) -> Activation:
    if name == "leaky_relu":
        return LeakyReLU(negative_slope)
    try:
        return HIDDEN[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(HIDDEN)}") from None


def output_activation(name: str) -> Activation:
    try:
        return OUTPUT[name]()
    except KeyError:
        raise ValueError(f"unknown output activation {name!r}; valid: {', '.join(OUTPUT)}") from None

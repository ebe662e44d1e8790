"""The MLP: dense layers that cache their input, pre-activation and activation for backprop and probes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from nnprobe.nn.activations import Activation, hidden_activation, output_activation
from nnprobe.nn.initializers import init_bias, init_weights

_ones_cache: dict[tuple[int, np.dtype], np.ndarray] = {}


def _column_sums(dz: np.ndarray) -> np.ndarray:
    """dz.sum(axis=0) as one BLAS GEMV (ones @ dz) for float32/float64; NumPy's reduction otherwise."""
    if dz.ndim != 2 or dz.dtype.char not in "fd" or not dz.flags.c_contiguous:
        return dz.sum(axis=0)
    key = (dz.shape[0], dz.dtype)
    ones = _ones_cache.get(key)
    if ones is None:
        if len(_ones_cache) > 16:
            _ones_cache.clear()
        ones = _ones_cache[key] = np.ones(dz.shape[0], dtype=dz.dtype)
    return ones @ dz


class Dense:
    """z = x W + b, a = f(z); forward keeps x, z and a, which backward and the probes read."""

    def __init__(self, name: str, W: np.ndarray, b: np.ndarray, activation: Activation, activation_name: str) -> None:
        self.name = name
        self.W = W
        self.b = b
        self.activation = activation
        self.activation_name = activation_name
        self.x: Optional[np.ndarray] = None
        self.z: Optional[np.ndarray] = None
        self.a: Optional[np.ndarray] = None

    @property
    def fan_in(self) -> int:
        return self.W.shape[0]

    @property
    def units(self) -> int:
        return self.W.shape[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        z = x @ self.W
        z += self.b  # in place: the GEMM's output is fresh, and z is what the layer keeps
        a = self.activation.forward(z)
        self.z = z
        self.a = a
        return a


@dataclass
class Gradients:
    """dL/dW and dL/db per layer, in forward order."""

    dW: list[np.ndarray]
    db: list[np.ndarray]

    def flat(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for w, b in zip(self.dW, self.db):
            out += [w, b]
        return out


class MLP:
    def __init__(self, layers: list[Dense]) -> None:
        self.layers = layers

    @property
    def output(self) -> Dense:
        return self.layers[-1]

    def params(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for layer in self.layers:
            out += [layer.W, layer.b]
        return out

    def forward(self, x: np.ndarray, observe: Optional[Callable[[int, "Dense"], None]] = None) -> np.ndarray:
        """`observe(i, layer)` runs right after layer i, while its z and a are still in the cache."""
        for i, layer in enumerate(self.layers):
            x = layer.forward(x)
            if observe is not None:
                observe(i, layer)
        return x

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z, a) of the output layer, leaving the training caches untouched (validation)."""
        z = x
        for layer in self.layers:
            z = x @ layer.W + layer.b
            x = layer.activation.forward(z)
        return z, x

    def l2_penalty(self, l2: float) -> float:
        if l2 == 0:
            return 0.0
        return 0.5 * l2 * sum(float(np.dot(l.W.ravel(), l.W.ravel())) for l in self.layers)

    def backward(self, grad_z_out: np.ndarray, l2: float = 0.0,
                 observe: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None) -> Gradients:
        """Walk the layers in reverse from dL/dz of the output layer.

        `observe(i, dW, db)` runs as soon as layer i's gradients exist, while they are still in the cache.
        """
        n = len(self.layers)
        dW: list = [None] * n
        db: list = [None] * n
        dz = grad_z_out
        for i in range(n - 1, -1, -1):
            layer = self.layers[i]
            gw = layer.x.T @ dz
            if l2:
                gw += l2 * layer.W
            dW[i] = gw
            db[i] = _column_sums(dz)
            if observe is not None:
                observe(i, gw, db[i])
            if i:
                below = self.layers[i - 1]
                dz = below.activation.vjp(below.z, below.a, dz @ layer.W.T)
        return Gradients(dW, db)


def output_units(task: str, loss_kind: str, output: str, n_targets: int, n_classes: Optional[int]) -> int:
    """One unit per class, except sigmoid-style BCE on two classes, which needs one."""
    if task == "regression":
        return n_targets
    if n_classes is None:
        raise ValueError("a classification task needs n_classes")
    if loss_kind == "bce" and n_classes == 2 and output != "softmax":
        return 1
    return n_classes


def build_mlp(model_cfg, n_inputs: int, n_outputs: int, rng: np.random.Generator,
              hidden: Optional[Activation] = None) -> MLP:
    """Layers dense1..denseK; `hidden` overrides the configured hidden activation (user code)."""
    dtype = np.dtype(model_cfg.dtype)
    widths = [n_inputs, *model_cfg.hidden, n_outputs]
    layers: list[Dense] = []
    for i in range(len(widths) - 1):
        is_output = i == len(widths) - 2
        if is_output:
            act, act_name = output_activation(model_cfg.output), model_cfg.output
        else:
            act = hidden if hidden is not None else hidden_activation(model_cfg.activation, model_cfg.negative_slope)
            act_name = model_cfg.activation
        W = init_weights(model_cfg.init, rng, widths[i], widths[i + 1], model_cfg.init_scale, dtype)
        b = init_bias(model_cfg.bias_init, rng, widths[i + 1], dtype)
        layers.append(Dense(f"dense{i + 1}", W, b, act, act_name))
    return MLP(layers)

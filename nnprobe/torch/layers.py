"""Which modules of a PyTorch model are layers, and what their activations are called in nnprobe's terms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from nnprobe.errors import NnprobeError
from nnprobe.nn.activations import Sigmoid, Tanh


class ProbeError(NnprobeError):
    """nnprobe.torch.Probe was given something it cannot probe, or used out of order."""


@dataclass(frozen=True)
class LayerKind:
    """How to read a weighted module: its fan-in, its number of units and the axis of its output holding them."""

    fan_in: Callable[[nn.Module], int]
    units: Callable[[nn.Module], int]
    unit_dim: int


def _conv_fan_in(m: nn.Module) -> int:
    return int(m.weight.shape[1] * m.weight[0, 0].numel())


#: module types recorded as layers; a subclass counts as its base type
LAYER_KINDS: dict[type, LayerKind] = {
    nn.Linear: LayerKind(lambda m: m.in_features, lambda m: m.out_features, -1),
    nn.Conv1d: LayerKind(_conv_fan_in, lambda m: m.out_channels, 1),
    nn.Conv2d: LayerKind(_conv_fan_in, lambda m: m.out_channels, 1),
    nn.Conv3d: LayerKind(_conv_fan_in, lambda m: m.out_channels, 1),
}

#: activation modules, by the name nnprobe's detectors know them under
ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.ELU: "elu", nn.GELU: "gelu", nn.Softplus: "softplus", nn.Softmax: "softmax", nn.SiLU: "silu",
    nn.Identity: "identity",
}

#: |z| beyond which the activation's derivative is below 1% of its maximum (the same bands as `train`)
SATURATION: dict[str, float] = {"sigmoid": Sigmoid.saturation, "tanh": Tanh.saturation}

#: functional activations recognised by comparing a layer's input with its predecessor's output once
FUNCTIONAL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "leaky_relu": torch.nn.functional.leaky_relu,
    "gelu": torch.nn.functional.gelu,
    "elu": torch.nn.functional.elu,
    "softplus": torch.nn.functional.softplus,
    "silu": torch.nn.functional.silu,
}


def layer_kind(module: nn.Module) -> Optional[LayerKind]:
    for cls in type(module).__mro__:
        if cls in LAYER_KINDS:
            return LAYER_KINDS[cls]
    return None


def bounded_by_input(module: nn.Module) -> bool:
    """Whether the activation module's output is finite whenever its input is (|f(x)| <= |x| + a constant:
    ReLU, ReLU6, sigmoid, tanh, softmax, GELU, SiLU, softplus, ELU, identity, a LeakyReLU of slope <= 1).
    Its output then needs no non-finite check of its own: a non-finite output has a non-finite input,
    which was checked first and is named instead."""
    name = activation_name(module)
    if name == "leaky_relu":
        return abs(float(getattr(module, "negative_slope", math.inf))) <= 1.0
    if name == "elu":
        return math.isfinite(float(getattr(module, "alpha", math.inf)))
    return name is not None


def activation_name(module: nn.Module) -> Optional[str]:
    for cls in type(module).__mro__:
        if cls in ACTIVATION_MODULES:
            return ACTIVATION_MODULES[cls]
    return None


def identify(z: torch.Tensor, a: torch.Tensor) -> str:
    """The name of the function that made `a` from `z` (a functional activation), or 'unknown'."""
    if a.shape != z.shape:
        return "unknown"
    with torch.no_grad():
        for name, fn in FUNCTIONAL.items():
            try:
                if torch.allclose(fn(z), a, rtol=1e-4, atol=1e-6, equal_nan=True):
                    return name
            except RuntimeError:
                continue
    return "unknown"


@dataclass
class Layer:
    """A weighted module and what one step saw of it."""

    name: str
    module: nn.Module
    kind: LayerKind
    activation: Optional[str] = None  # known from the first step on
    order: int = -1  # position in execution order, from the first step on

    @property
    def fan_in(self) -> int:
        return int(self.kind.fan_in(self.module))

    @property
    def units(self) -> int:
        return int(self.kind.units(self.module))

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return getattr(self.module, "bias", None)

    def grads(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """dL/dW and dL/db as they are now (detached; None where there is none)."""
        w, b = self.weight, self.bias
        return (w.grad.detach() if w.grad is not None else None,
                b.grad.detach() if b is not None and b.grad is not None else None)


@dataclass
class Discovery:
    """The layers to record, and every leaf module, the forward non-finite check's hook points."""

    layers: dict[str, Layer] = field(default_factory=dict)
    leaves: dict[str, nn.Module] = field(default_factory=dict)


#: the name of a model that is itself a single leaf module
ROOT = "model"


def discover(model: nn.Module, only: Optional[list[str]] = None) -> Discovery:
    """The weighted modules (all, or the module paths in `only`) and every leaf module of `model`."""
    found = Discovery()
    named = dict(model.named_modules())
    for path, module in named.items():
        if not path:
            if any(True for _ in module.children()):
                continue
            path = ROOT  # the model is itself one module (a bare nn.Linear)
        if not any(True for _ in module.children()):
            found.leaves[path] = module
        kind = layer_kind(module)
        if kind is not None and (only is None or path in only):
            found.layers[path] = Layer(path, module, kind)
    if only is not None:
        for path in only:
            if path not in named:
                raise ProbeError(f"layers: {path!r} is not a module path of the model; module paths with weights: "
                                 f"{', '.join(p for p, m in named.items() if layer_kind(m)) or '(none)'}.")
            if path not in found.layers:
                raise ProbeError(f"layers: {path!r} is a {type(named[path]).__name__}, which nnprobe cannot record; "
                                 f"supported: {', '.join(c.__name__ for c in LAYER_KINDS)}.")
    if not found.layers:
        raise ProbeError(f"the model ({type(model).__name__}) has no module nnprobe can record as a layer; "
                         f"supported: {', '.join(c.__name__ for c in LAYER_KINDS)}.")
    return found

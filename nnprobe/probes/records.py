"""The records of the step log, built from what a training step computed: the layer under every writer.

`nnprobe train`, `nnprobe.Recorder` (hand-written NumPy loops) and `nnprobe.torch.Probe` all write
their logs through this module, so a record means the same thing whoever made it, and the detectors
(which see only records) judge every source alike. It depends on NumPy and the statistics next to
it, never on the Trainer, the config or `nn/`. The fields are documented in docs/log-schema.md.

A step record, in the order a step computes things::

    from nnprobe.probes import records

    rec = records.StepRecordBuilder(step, full=True, weight_distribution=step == 0)
    rec.input(x)                                   # optional: the batch (or True/False: known finite)
    rec.layer("dense1", z=z1, a=a1, W=W1, b=b1)    # forward order; each tensor optional
    rec.layer("dense2", z=z2, a=a2, W=W2, b=b2, saturation=5.986)  # a sigmoid output
    rec.loss(value, records.LossInputs(probabilities=a2, epsilon=0.0, two_sided=True))
    rec.grads("dense2", gW=gW2, gb=gb2)            # any order
    rec.grads("dense1", gW=gW1, gb=gb1)
    rec.before_update()                            # W and b are about to change: take what is still needed
    ...                                            # the optimizer updates the parameters
    rec.update("dense1", W_after=W1, b_after=b1, norm=update_norm_1)   # optional
    record = rec.record()                          # the dict `train` writes

Every tensor argument is one of:

- a NumPy array: float16, float32 or float64, any memory layout (views and transposes are
  fine); `z` and `a` are (batch, units); a bias may be 1-D or (1, units). The statistics are
  taken from it (docs/log-schema.md says which, and in what precision);
- a mapping: statistics already computed elsewhere, in the log's per-tensor schema (the `z`,
  `a`, `gW`, `gb`, `W` or `b` object of a layer record), used as given. The PyTorch probe takes
  its statistics on the device in batched reductions and passes them this way;
- None: the source does not have it. The record then holds `null` in its place, and no check
  that needs it passes silently: a layer without gradients leaves `grad_norm` null, not the
  norm of the gradients that happen to be there.

`full=False` makes the every-step light record (loss, global gradient norm, non-finite origin,
`loss_in`) and keeps the arrays it was given so that, when a non-finite value turns up in the
forward or backward pass, `before_update()` can still take the full statistics (a step where
something first went non-finite is always recorded in full). Arrays passed to a light step
must therefore stay unchanged until `before_update()`.

`nonfinite` names the first non-finite tensor in computation order: the input; per layer in
forward order its pre-activation, then its activation; the loss; the gradients from the last
layer to the first (weight, then bias); the parameters after the update, first layer to last
(weight, then bias).

`start_record(...)` builds the first line of a log from layer specs, the training data and the
run's metadata; `loss_record(step, loss)` the record of a step that was not probed at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

import nnprobe
from nnprobe.probes import statistics as st

#: the version of the log's record schema (docs/log-schema.md, "Versioning")
SCHEMA_VERSION = 1

#: an array to take statistics of, the statistics already taken (a mapping in the log's schema), or None
Tensor = Union[np.ndarray, Mapping[str, Any], None]
#: after an update: an array, its statistics (a mapping with `nonfinite`), or a bool (known finite or not)
Updated = Union[np.ndarray, Mapping[str, Any], bool, None]

#: the `a_from_z` values: how the activation relates to the pre-activation, which lets the statistics
#: share passes ("relu": a = max(z, 0) exactly; "identity": a is z itself; "other": anything else)
A_FROM_Z = ("relu", "identity", "other")


@dataclass(frozen=True)
class LossInputs:
    """What the loss took the log of (the probabilities, before any epsilon), for `loss_in`.

    `two_sided`: the loss also takes log(1 - p) (binary cross-entropy), so values above 1 - epsilon
    count as below epsilon too.
    """

    probabilities: np.ndarray
    epsilon: float = 0.0
    two_sided: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network, as the start record lists it."""

    name: str
    fan_in: int
    units: int
    activation: str
    is_output: bool


class _Layer:
    """What the builder holds of one layer: its statistics, or (light step) the arrays to take them from."""

    __slots__ = ("name", "z", "a", "W", "b", "gW", "gb", "saturation", "a_from_z", "sq_W", "sq_b",
                 "W_after", "b_after", "norm", "has_grads")

    def __init__(self, name: str) -> None:
        self.name = name
        self.z = self.a = self.W = self.b = self.gW = self.gb = None
        self.saturation: Optional[float] = None
        self.a_from_z = "other"
        self.sq_W: Optional[float] = None  # the gradients' sums of squares, for the global norm
        self.sq_b: Optional[float] = None
        self.W_after: Updated = None
        self.b_after: Updated = None
        self.norm: Optional[float] = None
        self.has_grads = False


def _is_stats(value: Any) -> bool:
    # a dict is checked first: isinstance against the Mapping ABC costs ~2 us, and it runs per tensor per step
    return type(value) is dict or (value is not None and not isinstance(value, np.ndarray)
                                   and isinstance(value, Mapping))


def _bad(stats: Optional[Mapping], *keys: str) -> bool:
    """Whether a statistics object counts any non-finite entry (absent counts are taken as none)."""
    return stats is not None and any(stats.get(k) for k in keys)


def _array(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what}: expected a floating-point array, got dtype {arr.dtype}")
    return arr


def _matrix(value: Any, what: str) -> np.ndarray:
    """z and a as (batch, units): a 1-D array is one example's units."""
    arr = _array(value, what)
    if arr.ndim == 1:
        return arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a (batch, units) array, got shape {arr.shape}")
    return arr


class StepRecordBuilder:
    """Collects one step's tensors and makes its step record (module docstring: the order of calls)."""

    def __init__(self, step: int, *, full: bool = True, weight_distribution: bool = False) -> None:
        """`full`: per-layer statistics (else the light record, made full only if something goes
        non-finite). `weight_distribution`: W's mean, std, min, max and sign fraction, not only its
        norm (`train` takes them at step 0, which is what `poor-init` judges)."""
        self.step = int(step)
        self.full = bool(full)
        self.weight_distribution = weight_distribution
        self._layers: list[_Layer] = []
        self._by_name: dict[str, _Layer] = {}
        self._input: Union[np.ndarray, bool, None] = None
        self._loss: Optional[float] = None
        self._loss_in: Optional[Mapping] = None
        self._grad_norm: Optional[float] = None
        self._settled = False
        self._origin: Optional[dict] = None
        self._extra: dict = {}

    # -- the step, in the order it happens

    def input(self, x: Union[np.ndarray, bool]) -> None:
        """The batch fed to the first layer, or whether it is known to be finite."""
        self._input = x if isinstance(x, (bool, np.bool_)) else _array(x, "input")

    def layer(self, name: str, *, z: Tensor = None, a: Tensor = None, W: Tensor = None, b: Tensor = None,
              saturation: Optional[float] = None, a_from_z: str = "other") -> None:
        """One layer's forward tensors and the parameters the forward pass used, in forward order.

        `saturation`: |z| beyond which the activation's derivative is below 1% of its maximum
        (sigmoid, tanh; gives `z.sat_frac`), None otherwise. `a_from_z`: see A_FROM_Z.
        """
        if name in self._by_name:
            raise ValueError(f"layer {name!r} given twice in step {self.step}")
        if a_from_z not in A_FROM_Z:
            raise ValueError(f"a_from_z: expected one of {', '.join(A_FROM_Z)}, got {a_from_z!r}")
        layer = _Layer(name)
        layer.saturation, layer.a_from_z = saturation, a_from_z
        layer.z = z if z is None or _is_stats(z) else _matrix(z, f"{name}.z")
        # an identity activation hands back z itself, which lets its statistics reuse z's passes
        layer.a = layer.z if a is z else a if a is None or _is_stats(a) else _matrix(a, f"{name}.a")
        layer.W = W if W is None or _is_stats(W) else _array(W, f"{name}.W")
        layer.b = b if b is None or _is_stats(b) else _array(b, f"{name}.b")
        if self.full:
            self._forward_stats(layer)
            self._param_stats(layer)
        self._layers.append(layer)
        self._by_name[name] = layer

    def loss(self, value: float, loss_in: Union[LossInputs, Mapping, None] = None) -> None:
        """The reduced loss of the batch (including any penalty), and what it took the log of."""
        self._loss = float(value)
        if isinstance(loss_in, LossInputs):
            self._loss_in = st.probability_stats(np.asarray(loss_in.probabilities), loss_in.epsilon,
                                                 loss_in.two_sided)
        else:
            self._loss_in = None if loss_in is None else dict(loss_in)

    def grads(self, name: str, *, gW: Tensor = None, gb: Tensor = None) -> None:
        """dL/dW and dL/db of a layer already given to layer(), before any clipping."""
        layer = self._by_name.get(name)
        if layer is None:
            raise ValueError(f"grads({name!r}): no such layer in step {self.step}; "
                             f"layers so far: {', '.join(self._by_name) or 'none'}")
        layer.has_grads = True
        layer.gW = gW if gW is None or _is_stats(gW) else _array(gW, f"{name}.gW")
        layer.gb = gb if gb is None or _is_stats(gb) else _array(gb, f"{name}.gb")
        if self.full:
            self._grad_stats(layer)

    def grad_norm(self, value: float) -> None:
        """The global gradient norm when the source computed it (to clip by); otherwise it is computed."""
        self._grad_norm = float(value)

    def before_update(self) -> None:
        """Settle the non-finite origin of the forward and backward passes; a light step where one was
        found becomes full, its statistics taken from the arrays it holds. Call before the parameters
        change; record() calls it when nobody did."""
        if self._settled:
            return
        self._settled = True
        if self._grad_norm is None:
            self._grad_norm = self._global_norm()
        self._origin = self._forward_origin() or self._backward_origin()
        if self._origin is not None and not self.full:
            self.full = True
            for layer in self._layers:
                self._forward_stats(layer)
                self._param_stats(layer)
                if layer.has_grads:
                    self._grad_stats(layer)

    def update(self, name: str, *, W_after: Updated = None, b_after: Updated = None,
               norm: Optional[float] = None) -> None:
        """The parameters after this step's update, and ||W_after - W_before|| (`update_ratio`)."""
        layer = self._by_name.get(name)
        if layer is None:
            raise ValueError(f"update({name!r}): no such layer in step {self.step}")
        layer.W_after, layer.b_after = W_after, b_after
        layer.norm = None if norm is None else float(norm)

    def accuracy(self, value: Optional[float]) -> None:
        """Classification: the fraction of the batch predicted right (written on full records)."""
        if value is not None:
            self._extra["accuracy"] = float(value)

    def validation(self, loss: Optional[float] = None, accuracy: Optional[float] = None) -> None:
        """Loss (and accuracy) on the validation split (written on full records)."""
        if loss is not None:
            self._extra["val_loss"] = float(loss)
        if accuracy is not None:
            self._extra["val_accuracy"] = float(accuracy)

    def record(self) -> dict:
        """The step record, exactly as `train` writes it."""
        self.before_update()
        origin = self._origin or self._update_origin()
        record: dict = {"type": "step", "step": self.step, "full": self.full, "loss": self._loss,
                        "grad_norm": self._grad_norm, "nonfinite": origin, "loss_in": self._loss_in}
        if self.full:
            record.update(self._extra)
            record["layers"] = [self._layer_record(layer) for layer in self._layers]
        return record

    # -- statistics

    def _forward_stats(self, layer: _Layer) -> None:
        z, a = layer.z, layer.a
        if z is not None and not _is_stats(z):
            if a is not None and not _is_stats(a):
                kind = "identity" if a is z else ("relu" if layer.a_from_z == "relu" else "other")
                layer.z, layer.a = st.forward_stats(z, a, kind, layer.saturation)
                st.mark_dead_units(layer.a, z, kind, layer.saturation)
                return
            layer.z, dead = st.preactivation_stats(z, layer.saturation)
            if a is None:
                return
        else:
            dead = None
        if a is not None and not _is_stats(a):
            layer.a = st.activation_stats(a, dead)

    def _param_stats(self, layer: _Layer) -> None:
        if layer.W is not None and not _is_stats(layer.W):
            layer.W = st.weight_stats(layer.W) if self.weight_distribution else st.weight_norm_stats(layer.W)
        if layer.b is not None and not _is_stats(layer.b):
            layer.b = st.bias_stats(layer.b)

    def _grad_stats(self, layer: _Layer) -> None:
        if layer.gW is not None and not _is_stats(layer.gW):
            layer.gW, layer.sq_W = st.gradient_stats_with_sq(layer.gW, with_zero_frac=True)
        if layer.gb is not None and not _is_stats(layer.gb):
            layer.gb, layer.sq_b = st.gradient_stats_with_sq(layer.gb, with_zero_frac=False)

    def _global_norm(self) -> Optional[float]:
        """sqrt of the sum of every gradient's sum of squares; None when a layer lacks a gradient."""
        if not self._layers:
            return None
        total = 0.0
        for layer in self._layers:
            for g, sq in ((layer.gW, layer.sq_W), (layer.gb, layer.sq_b)):
                if g is None:
                    return None
                if sq is None:
                    if _is_stats(g):
                        norm, bad = g.get("norm"), g.get("nonfinite")
                        sq = math.nan if bad or norm is None else float(norm) ** 2
                    else:
                        sq = st.sq_norm(g)
                total += sq
        return math.sqrt(total)

    # -- where the first non-finite value was born

    def _forward_origin(self) -> Optional[dict]:
        x = self._input
        if x is not None and (x is False or (not isinstance(x, (bool, np.bool_)) and not st.is_finite(x))):
            return {"pass": "forward", "tensor": "input", "layer": None}
        for layer in self._layers:
            for tensor, value in (("pre-activation", layer.z), ("activation", layer.a)):
                if value is None:
                    continue
                bad = _bad(value, "nan", "posinf", "neginf") if _is_stats(value) else not st.is_finite(value)
                if bad:
                    return {"pass": "forward", "tensor": tensor, "layer": layer.name}
        if self._loss is not None and not math.isfinite(self._loss):
            return {"pass": "forward", "tensor": "loss", "layer": None}
        return None

    def _backward_origin(self) -> Optional[dict]:
        if self._grad_norm is not None and math.isfinite(self._grad_norm):
            return None  # every sum of squares finite: every gradient is
        for layer in reversed(self._layers):
            for tensor, g in (("weight-gradient", layer.gW), ("bias-gradient", layer.gb)):
                if g is None:
                    continue
                bad = _bad(g, "nonfinite") if _is_stats(g) else not st.is_finite(g)
                if bad:
                    return {"pass": "backward", "tensor": tensor, "layer": layer.name}
        return None

    def _update_origin(self) -> Optional[dict]:
        for layer in self._layers:
            for tensor, p in (("weight", layer.W_after), ("bias", layer.b_after)):
                if p is None:
                    continue
                if isinstance(p, (bool, np.bool_)):
                    bad = not p
                elif _is_stats(p):
                    bad = _bad(p, "nonfinite", "nan", "posinf", "neginf")
                else:
                    bad = not st.is_finite(_array(p, f"{layer.name}.{tensor}"))
                if bad:
                    return {"pass": "update", "tensor": tensor, "layer": layer.name}
        return None

    def _layer_record(self, layer: _Layer) -> dict:
        w_norm = layer.W.get("norm") if layer.W is not None else None
        ratio = layer.norm / w_norm if layer.norm is not None and w_norm else None
        return {"name": layer.name, "z": layer.z, "a": layer.a, "gW": layer.gW, "gb": layer.gb,
                "W": layer.W, "b": layer.b, "update_ratio": ratio}


def loss_record(step: int, loss: float) -> dict:
    """The record of a step taken with the probes off: its loss, and whether that is finite."""
    loss = float(loss)
    origin = None if math.isfinite(loss) else {"pass": "forward", "tensor": "loss", "layer": None}
    return {"type": "step", "step": int(step), "full": False, "loss": loss, "grad_norm": None,
            "nonfinite": origin, "loss_in": None}


def start_record(*, name: str, seed: Optional[int], task: Optional[str], dtype: str,
                 layers: Sequence[LayerSpec], x: Optional[np.ndarray], y: Optional[np.ndarray] = None,
                 n_val: int = 0, n_classes: Optional[int] = None, loss: Optional[Mapping] = None,
                 optimizer: Optional[Mapping] = None, probes_every: int = 1, batch_size: Optional[int] = None,
                 total_steps: Optional[int] = None) -> dict:
    """The first record of a log: the network, the training data's statistics and the run's settings.

    `x`, `y`: the training inputs (examples x features) and targets, after any normalization (None:
    the source does not know them; `data` is then null). Target statistics are written for
    `task="regression"` only. `loss`: {kind, reduction, from_logits, epsilon, l2}; `optimizer`:
    {kind, lr, clip_grad_norm} (None where the source does not know them).
    """
    data = None
    if x is not None:
        x64 = np.asarray(x, dtype=np.float64)
        if x64.ndim == 1:
            x64 = x64.reshape(-1, 1)
        data = {
            "n_train": int(x64.shape[0]), "n_val": int(n_val), "n_features": int(x64.shape[1]),
            "n_classes": n_classes,
            "input_mean": x64.mean(axis=0).tolist(), "input_std": x64.std(axis=0).tolist(),
            "input_min": x64.min(axis=0).tolist(), "input_max": x64.max(axis=0).tolist(),
            "target_mean": None, "target_std": None, "target_min": None, "target_max": None,
        }
        if task == "regression" and y is not None:
            y64 = np.asarray(y, dtype=np.float64)
            data.update(target_mean=float(y64.mean()), target_std=float(y64.std()),
                        target_min=float(y64.min()), target_max=float(y64.max()))
    return {
        "type": "start", "schema": SCHEMA_VERSION, "nnprobe": nnprobe.__version__, "name": name,
        "seed": seed, "task": task, "dtype": dtype, "probes_every": probes_every, "batch_size": batch_size,
        "total_steps": total_steps,
        "layers": [{"name": l.name, "fan_in": int(l.fan_in), "units": int(l.units), "activation": l.activation,
                    "is_output": bool(l.is_output)} for l in layers],
        "loss": None if loss is None else dict(loss),
        "optimizer": None if optimizer is None else dict(optimizer),
        "data": data,
    }

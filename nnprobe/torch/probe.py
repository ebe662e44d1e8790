"""`Probe`: nnprobe's step records from a PyTorch training loop, with the detectors `train` runs.

Hooks see each tensor as the step makes it: a forward pre-hook and a forward hook on the leaf
modules (the non-finite check of their input and output, and a layer's z and a), a tensor hook on
each layer's z and a for their gradients, and `before_update` for the parameter gradients.

On CPU (nnprobe.torch.host) every check and statistic reads the tensor's memory through a NumPy
view with nnprobe.probes.statistics, the engine `train` and the Recorder use: a step that is not
recorded in full costs one dot product per hooked tensor (its non-finite check), one per
parameter gradient (the global norm) and one per layer parameter after the update. On another
device (nnprobe.torch.stats) the same checks and statistics are batched reductions on the device,
moved to the host in one transfer at the end of the step.
"""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from nnprobe.diagnose.detectors import validate_codes
from nnprobe.errors import RunDirError
from nnprobe.diagnose.detectors.outputs import PROBABILITY_OUTPUT
from nnprobe.train.recorded import RecordedRun, recorded_config
from nnprobe.train.signals import StopFlag, catch_signals
from nnprobe.probes import records
from nnprobe.probes.changes import UpdateTracker
from nnprobe.probes import statistics
from nnprobe.torch import host, stats
from nnprobe.torch.hooks import HookErrors, HookSet
from nnprobe.torch.layers import (SATURATION, Discovery, Layer, ProbeError, activation_name, bounded_by_input, discover,
                                  identify, layer_kind)

LOSS_KINDS = ("mse", "bce", "cross_entropy")
#: parameter dtypes whose steps take the host path on CPU (bfloat16 and float16 models keep the torch path)
_HOST_DTYPES = (torch.float32, torch.float64)
TASKS = ("regression", "classification")


#: the keys of a `nonfinite` origin; hooks keep it as a tuple and make the dict only when one is named
_WHERE = ("pass", "tensor", "layer", "module")


class _Check:
    """One tensor of the step's non-finite check, in computation order, and what it would name.

    On CPU the check runs in the hook (`finite`), or comes from statistics that count NaN and inf
    (a full step's z), or from the check of the output of the Linear it feeds (`decided_by`: finite
    if that is); elsewhere `tensor` is checked at the end of the step, with every other tensor, by
    one fused reduction.
    """

    __slots__ = ("where", "tensor", "finite", "decided_by")

    def __init__(self, where: tuple, tensor: torch.Tensor, finite: Optional[bool] = None) -> None:
        self.where = where
        self.tensor = tensor
        self.finite = finite
        self.decided_by: Optional[_Check] = None

    def resolved(self) -> bool:
        """Whether the tensor is finite, reading it only if nothing else has said so."""
        if self.finite is None:
            by = self.decided_by
            self.finite = True if by is not None and by.resolved() else host.finite(self.tensor)
        return self.finite


@dataclass(slots=True)
class _StepState:
    index: int
    full: bool
    host: bool  # the model's parameters are on the CPU: checks and statistics on NumPy views (host.py)
    forward: list[_Check] = field(default_factory=list)
    backward: list[tuple[tuple, torch.Tensor]] = field(default_factory=list)
    z: dict[str, torch.Tensor] = field(default_factory=dict)
    a: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # layers in execution order
    follows: dict[str, str] = field(default_factory=dict)  # activation module path -> its layer
    pending: Optional[str] = None  # the last layer whose activation output is not known yet
    last_output: Optional[torch.Tensor] = None
    last_layer: Optional[str] = None
    unchecked: Optional[_Check] = None  # on the host: a Linear's input, decided by its output's check
    first_input: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    outputs: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    grads: Optional[dict[str, tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]] = None
    optimizer: Any = None
    z_version: dict[str, int] = field(default_factory=dict)  # z's version counter in its hook
    # a full step's statistics in the log's per-tensor schema, per layer
    entries: dict[str, dict] = field(default_factory=dict)
    loss_in: Optional[dict] = None
    accuracy: Optional[float] = None
    # on the host: every parameter gradient's sum of squares, by id(parameter); the deferred z of a full step
    grad_sq: dict[int, float] = field(default_factory=dict)
    z_later: dict[str, torch.Tensor] = field(default_factory=dict)
    z_check: dict[str, _Check] = field(default_factory=dict)  # a full step's z checks, decided by z's statistics
    dead: dict[str, int] = field(default_factory=dict)
    # on a device: the norms and parts queued for the step's one transfer
    grad_norms: dict[int, torch.Tensor] = field(default_factory=dict)  # id(parameter) -> its gradient's norm
    all_grad_norms: list[torch.Tensor] = field(default_factory=list)  # every parameter's, for grad_norm
    w_before: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: Optional[stats.Batch] = None
    forward_parts: dict[tuple[str, str], list[torch.Tensor]] = field(default_factory=dict)


class Step:
    """What the loop tells the probe within one step: the loss, and when the gradients are final."""

    def __init__(self, probe: "Probe", state: Optional[_StepState]) -> None:
        self._probe = probe
        self._state = state

    def loss(self, loss: torch.Tensor, outputs: Optional[torch.Tensor] = None,
             targets: Optional[torch.Tensor] = None) -> None:
        """The step's loss; `outputs` (what the loss read: probabilities or logits) and `targets` optional."""
        if self._state is not None:
            self._probe._guarded(self._probe._on_loss, self._state, loss, outputs, targets)

    def before_update(self, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Read the parameter gradients now (after unscaling, before clipping if called there)."""
        if self._state is not None:
            self._probe._guarded(self._probe._read_grads, self._state, optimizer)

    def __enter__(self) -> "Step":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._probe._end_step(self._state, failed=exc_type is not None)
        return False


class Probe:
    """Record a PyTorch training loop into an nnprobe run directory and diagnose it live.

    with Probe(model, "runs/net", every=10, loss="cross_entropy") as probe:
        for x, y in loader:
            with probe.step() as s:
                ...; s.loss(loss, outputs=out, targets=y); ...; s.before_update(optimizer); optimizer.step()
            if probe.stopped:
                break
    """

    def __init__(self, model: nn.Module, out: str | Path, every: int = 10, loss: Optional[str] = None,
                 task: Optional[str] = None, stop_on: Iterable[str] = ("nonfinite",),
                 layers: Optional[list[str]] = None, name: Optional[str] = None) -> None:
        if not isinstance(model, nn.Module):
            raise ProbeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ProbeError(f"every: expected a positive integer (record statistics every N steps), got {every!r}.")
        if loss is not None and loss not in LOSS_KINDS:
            raise ProbeError(f"loss: expected one of {', '.join(LOSS_KINDS)} or None, got {loss!r}.")
        if task is not None and task not in TASKS:
            raise ProbeError(f"task: expected one of {', '.join(TASKS)} or None, got {task!r}.")
        self.model = model
        self.every = every
        self.loss_kind = loss
        self.task = task or ("regression" if loss in (None, "mse") else "classification")
        self.found: Discovery = discover(model, layers)
        self._parameters = list(model.parameters())  # walked once: model.parameters() walks every module
        codes = [stop_on] if isinstance(stop_on, str) else list(stop_on)
        try:
            validate_codes(codes, "Probe(stop_on=)")
        except ValueError as exc:  # an unknown code: the message names it and lists the valid ones
            raise ProbeError(str(exc)) from None
        config = recorded_config(name or Path(out).name or "torch", loss or "mse", every, codes)
        self.run = RecordedRun(config, out, extra_meta={"source": "torch", "torch": torch.__version__},
                               remedy="choose a writable directory for Probe(out=...)")
        self.errors = HookErrors()
        self.hooks = HookSet()
        self._flag = StopFlag()
        self._signals = ExitStack()
        self._state: Optional[_StepState] = None
        self._step_index = 0
        self._layer_order: list[str] = []  # from the first step
        self._from_logits: Optional[bool] = None
        self._optimizer_info: Optional[dict] = None
        first = next(iter(self.found.layers.values()))
        self._first_weight = first.weight  # where it lives says which path a step takes (host or device)
        self._trackers: dict[str, UpdateTracker] = {}  # on the host: each layer's weights before the update
        self._views = host.Views()  # on the host: the parameters' NumPy views
        # each layer's parameters, as the update check walks them (weight, then bias)
        self._layer_params = {name: [("weight", layer.weight)] + ([("bias", layer.bias)] if layer.bias is not None
                                                                  else [])
                              for name, layer in self.found.layers.items()}
        self._defer: dict[str, bool] = {}  # whether a layer's z was intact when its a was made, last time
        self._grad_hooks: dict[tuple, Any] = {}  # one tensor hook per (layer, tensor, module), reused each step
        self._closed = False
        self.write_error: Optional[str] = None  # why the run directory took no more records, if it did not
        self.stopped = False
        self.result = None
        self._register()

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Probe":
        self._signals.enter_context(catch_signals(self._flag))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status = "completed"
        else:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self.close(status)
        return False

    def close(self, status: Optional[str] = None) -> Any:
        """Remove every hook, write the end record and the findings; return the run's result (idempotent)."""
        if self._closed:
            return self.result
        self._closed = True
        self.hooks.remove()
        self._state = None  # the tensor hooks still on live tensors do nothing from now on
        self._signals.close()
        if status is None or status == "completed":
            status = "interrupted" if self._flag.signal is not None else "completed"
        extra = {"probe_errors": {"count": self.errors.count, "first": self.errors.first}}
        self.result = self.run.finish(status, extra_meta=extra)
        if self.errors.count:
            problem = (f"probe: {self.errors.count} exception(s) inside nnprobe's hooks were caught and training "
                       f"went on; the first: {self.errors.first}")
            self.result.log_problems.append(problem)
            warnings.warn(problem, RuntimeWarning, stacklevel=2)
        return self.result

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def _write_failed(self, exc: RunDirError) -> None:
        """The run directory took no more records: the hooks come off, later steps record nothing, and the
        loop is told once (the run ends `failed`, its complete records readable by `nnprobe diagnose`)."""
        self.hooks.remove()
        self.write_error = str(exc)
        warnings.warn(f"nnprobe.torch.Probe: {exc} Training goes on without the probe.", RuntimeWarning, stacklevel=3)

    def step(self) -> Step:
        """A context for one optimizer step; after `stopped`, or after close, it records nothing."""
        if self._closed or self.stopped or self.write_error is not None:
            return Step(self, None)
        planned = self._step_index % self.every == 0
        w = self._first_weight
        on_host = w.device.type == "cpu" and w.dtype in _HOST_DTYPES
        self._state = _StepState(index=self._step_index, full=planned, host=on_host,
                                 batch=None if on_host else stats.Batch())
        self.errors.step_count = 0
        return Step(self, self._state)

    # ------------------------------------------------------------ hooks

    def _register(self) -> None:
        guard = self.errors.guard
        fed = _fed_by_a_leaf(self.model)
        for path, module in self.found.leaves.items():
            # a module whose input is always the output of the leaf before it (nn.Sequential) needs no
            # pre-hook: that output was checked by the leaf's own forward hook. A layer keeps its pre-hook
            # (which takes its predecessor's output as the previous layer's a) unless it follows a layer
            # and an activation module in that order: the activation module's hook takes that a.
            before = fed.get(path)
            if before is None or (path in self.found.layers and not (
                    activation_name(before[0]) is not None and layer_kind(before[1]) is not None)):
                self.hooks.add(module.register_forward_pre_hook(guard(self._pre_hook(path))))
            self.hooks.add(module.register_forward_hook(guard(self._forward_hook(path, module))))

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.errors.add(exc)

    def _pre_hook(self, path: str):
        layer = self.found.layers.get(path)
        # an nn.Linear's output is finite only if its input is (NaN * 0 is NaN): on the host its input is
        # read only when its output is not finite
        linear = isinstance(self.found.leaves[path], nn.Linear) and self.found.leaves[path].out_features > 0

        def hook(module: nn.Module, inputs: tuple) -> None:
            st = self._state
            if st is None or not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            x = inputs[0]
            if st.first_input is None:
                st.first_input = x
            if layer is not None and st.pending is not None:
                self._set_activation(st, st.pending, x, functional=True)
            if x is not st.last_output and x.is_floating_point():
                if linear and st.host:
                    st.unchecked = _Check(self._input_origin(st, path), x)
                    st.forward.append(st.unchecked)  # decided in the forward hook, by the output's check
                else:
                    self._check(st, self._input_origin(st, path), x)
        return hook

    def _input_origin(self, st: _StepState, path: str) -> tuple:
        if not st.forward:
            return ("forward", "input", None, path)
        # made by code between modules (a functional activation, an operation in forward())
        return ("forward", "activation", st.last_layer, f"code before {path}")

    def _check(self, st: _StepState, where: tuple, t: torch.Tensor) -> None:
        """The non-finite check of a forward tensor: now, on a NumPy view (host); at the end of the step (device)."""
        st.forward.append(_Check(where, t, host.finite(t) if st.host else None))

    def _forward_hook(self, path: str, module: nn.Module):
        layer = self.found.layers.get(path)
        act = activation_name(module)
        bounded = bounded_by_input(module)
        z_where = ("forward", "pre-activation", path, path)

        def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
            st = self._state
            if st is None or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            if layer is not None and path not in st.z:
                if st.pending is not None:
                    self._set_activation(st, st.pending, st.z[st.pending], functional=False)
                where = z_where
                st.z[path] = output
                st.z_version[path] = output._version
                st.order.append(path)
                st.pending = path
                st.last_layer = path
                if st.full and st.host:  # z's statistics count its NaN and inf: they are its check
                    st.z_check[path] = _Check(where, output)
                    st.forward.append(st.z_check[path])
                    self._forward_stats(st, layer, "z", output)
                    where = None
                elif st.full:
                    self._forward_stats(st, layer, "z", output)
                self._watch_gradient(output, path, "pre-activation-gradient", path)
            elif act is not None and st.pending is not None and (
                    output is st.z[st.pending] or (inputs and inputs[0] is st.z[st.pending])):
                owner = st.pending
                st.follows[path] = owner
                self._name_activation(self.found.layers[owner], act)
                where = ("forward", "activation", owner, path)
                self._set_activation(st, owner, output, functional=False, module=path, relu=type(mod) is nn.ReLU)
                if bounded:  # finite if z is, and z was checked (and would be named first): no check of its own
                    st.last_output = output
                    return
            else:
                where = ("forward", "output", st.last_layer, path)
            if where is not None:
                self._check(st, where, output)
            st.last_output = output
            if st.unchecked is not None:  # this module's input (a Linear's): finite if the output is
                check, st.unchecked = st.unchecked, None
                out = st.forward[-1]
                if out.finite is None:
                    check.decided_by = out
                else:
                    check.finite = True if out.finite else host.finite(check.tensor)
        return hook

    def _name_activation(self, layer: Layer, name: str) -> None:
        if layer.activation is None:
            layer.activation = name

    def _set_activation(self, st: _StepState, owner: str, a: torch.Tensor, *, functional: bool,
                        module: Optional[str] = None, relu: bool = False) -> None:
        """The layer's a is known: the activation module's output, or the next layer's input."""
        st.pending = None
        layer = self.found.layers[owner]
        z = st.z[owner]
        if functional:
            if layer.activation is None:
                layer.activation = "identity" if a is z else identify(z.detach(), a.detach())
        st.a[owner] = a
        # z's statistics may wait for a (one shared pass) on later steps if z is still unchanged now
        self._defer[owner] = z._version == st.z_version[owner]
        if a is not z:
            self._watch_gradient(a, owner, "activation-gradient", module or owner)
        if st.full:
            self._forward_stats(st, layer, "a", a, "identity" if a is z else "relu" if relu else "other")

    def _watch_gradient(self, t: torch.Tensor, layer: str, tensor: str, module: str) -> None:
        """A tensor hook that keeps the gradient (checked only if a parameter gradient is not finite).

        One hook function per (layer, tensor, module), made once; it is not removed at the end of
        the step (a tensor's hooks go with the tensor), and does nothing outside a step.
        """
        if not t.requires_grad:
            return
        key = (layer, tensor, module)
        fn = self._grad_hooks.get(key)
        if fn is None:
            where = ("backward", tensor, layer, module)

            def on_grad(grad: torch.Tensor) -> None:
                st = self._state
                if st is not None:
                    st.backward.append((where, grad))
            fn = self._grad_hooks[key] = self.errors.guard(on_grad)
        t.register_hook(fn)

    def _forward_stats(self, st: _StepState, layer: Layer, kind: str, x: torch.Tensor, a_kind: str = "other") -> None:
        """A full step's statistics of z or a, taken in the hook: before an in-place activation overwrites z.

        On the host z waits for a when z was found unchanged at a's time on the step before (then one
        pass gives both, and a ReLU's a needs no read of its own), and is taken at once otherwise.
        """
        if not st.host:
            saturation = SATURATION.get(layer.activation) if kind == "z" else None
            st.forward_parts[(layer.name, kind)] = stats.forward_parts(x, kind, layer.kind.unit_dim, saturation)
            return
        with np.errstate(all="ignore"):  # NaN and inf are data here
            self._forward_stats_host(st, layer, kind, x, a_kind)

    def _forward_stats_host(self, st: _StepState, layer: Layer, kind: str, x: torch.Tensor, a_kind: str) -> None:
        name, unit_dim = layer.name, layer.kind.unit_dim
        entry = st.entries.setdefault(name, {})
        if kind == "z":
            if self._defer.get(name) and self._layer_order:
                st.z_later[name] = x
            else:
                entry["z"], st.dead[name] = host.preactivation(x, unit_dim, SATURATION.get(layer.activation))
                self._z_checked(st, name, entry["z"])
            return
        z = st.z_later.pop(name, None)
        if z is not None and z._version == st.z_version[name]:
            entry["z"], entry["a"] = host.forward(z, x, unit_dim, a_kind, SATURATION.get(layer.activation))
            self._z_checked(st, name, entry["z"])
            return
        if z is not None:  # changed in place after all (the step before it was not): read as it is now
            entry["z"], st.dead[name] = host.preactivation(z, unit_dim, SATURATION.get(layer.activation))
            self._z_checked(st, name, entry["z"])
        entry["a"] = host.activation(x, unit_dim, st.dead.get(name, 0))

    @staticmethod
    def _z_checked(st: _StepState, name: str, z: dict) -> None:
        """z's non-finite check, from its statistics' NaN and inf counts."""
        check = st.z_check.pop(name, None)
        if check is not None:
            check.finite = not (z["nan"] or z["posinf"] or z["neginf"])

    # ------------------------------------------------------------ the loop's calls

    def _on_loss(self, st: _StepState, loss: torch.Tensor, outputs, targets) -> None:
        if not isinstance(loss, torch.Tensor):
            loss = torch.as_tensor(float(loss))
        st.loss = loss.detach()
        st.outputs = outputs if isinstance(outputs, torch.Tensor) else None
        st.targets = targets if isinstance(targets, torch.Tensor) else None
        last = st.order[-1] if st.order else None
        if st.pending is not None and st.outputs is not None and st.outputs is not st.z[st.pending]:
            self._set_activation(st, st.pending, st.outputs, functional=True)
        if self._from_logits is None and last is not None:
            self._from_logits = st.outputs is None or st.outputs is st.z[last]
        if st.outputs is not None and st.outputs is not st.last_output and st.outputs.is_floating_point():
            self._check(st, ("forward", "activation", last, "code before the loss"), st.outputs)

    def _read_grads(self, st: _StepState, optimizer, late: bool = False) -> None:
        """Every parameter's gradient now: the global norm's parts, and a full step's statistics.

        `late`: before_update was not called, the parameters have been updated already.
        """
        if optimizer is not None:
            st.optimizer = optimizer
        st.grads = {}
        if st.host:  # the gradients stay where they are (p.grad), read again only by a full record
            with host.quiet():  # NaN and inf are data here
                self._read_grads_host(st, late)
            return
        for name, layer in self.found.layers.items():
            st.grads[name] = self._layer_grads(layer)
        params = [p for p in self._parameters if p.grad is not None]
        grads = [p.grad.detach() for p in params]
        norms = torch._foreach_norm(grads) if grads else []
        st.grad_norms = {id(p): n for p, n in zip(params, norms)}
        st.all_grad_norms = list(norms)
        if st.full and not late:
            for name, layer in self.found.layers.items():
                st.w_before[name] = layer.weight.detach().clone()

    def _read_grads_host(self, st: _StepState, late: bool) -> None:
        """One dot product per gradient (its sum of squares); on a full step, each layer's gradient
        statistics in one pass (which give that sum too), W and b as the forward used them, and a
        copy of W for the update's norm."""
        sq = st.grad_sq
        if st.full:
            distribution = not self._layer_order
            for name, layer in self.found.layers.items():
                entry = st.entries.setdefault(name, {})
                gw, gb = self._layer_grads(layer)
                for key, g, param in (("gW", gw, layer.weight), ("gb", gb, layer.bias)):
                    if g is not None:
                        entry[key], sq[id(param)] = host.gradient(g, key == "gW")
                w = self._views(layer.weight)
                if late:  # these are the weights after the update
                    entry["W"] = host.weight(w, distribution)
                    entry["W"]["after_update"] = True
                else:  # kept for the update's norm; the copy's read gives ||W|| where the kernel runs
                    tracker = self._trackers.get(name)
                    if tracker is None:
                        tracker = self._trackers[name] = UpdateTracker()
                    w_sq = tracker.keep(w, st.index)
                    known = w_sq is not None and w_sq < math.inf and not distribution
                    entry["W"] = {"norm": math.sqrt(w_sq), "nonfinite": 0} if known else host.weight(w, distribution)
                    entry["kept"] = True
                if layer.bias is not None:
                    entry["b"] = statistics.bias_stats(host.view(layer.bias))
        grad_sq = host.grad_sq
        for p in self._parameters:
            g = p.grad
            if g is not None and id(p) not in sq:
                sq[id(p)] = grad_sq(g)

    @staticmethod
    def _layer_grads(layer: Layer) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        w, b = layer.weight, layer.bias
        return (w.grad.detach() if w.grad is not None else None,
                b.grad.detach() if b is not None and b.grad is not None else None)

    # ------------------------------------------------------------ the end of a step

    def _end_step(self, st: Optional[_StepState], failed: bool) -> None:
        if st is None:
            return
        try:
            if not failed:
                self._record(st)
        except RunDirError as exc:  # the log cannot be written (a full disk): training goes on, unrecorded
            self._write_failed(exc)
        except Exception as exc:  # a bug in the probe: count it, keep training
            self.errors.add(exc)
        finally:
            self._state = None
            self._step_index += 1
        if self._flag.signal is not None and not self.stopped:
            self.stopped = True
            self._signals.close()  # a second Ctrl-C interrupts as usual

    def _params_of(self, name: str) -> list[tuple[str, torch.Tensor]]:
        return self._layer_params[name]

    def _record(self, st: _StepState) -> None:
        if st.grads is None:
            self._read_grads(st, None, late=True)
        for name, z in list(st.z.items()):
            if name not in st.a:
                self._set_activation(st, name, z, functional=True)
        first = not self._layer_order
        if first:
            self._layer_order = list(st.order)
        order = [n for n in self._layer_order if n in st.z]
        if st.host:
            with host.quiet():  # NaN and inf are data here
                loss, grad_norm, origin = self._settle_host(st, order, first)
        else:
            loss, grad_norm, origin = self._settle_device(st, order, first)
        if first:
            self.run.begin(self._start_record(st, order))
        if self.run.step(self._step_record(st, order, first, loss, grad_norm, origin)) is not None:
            self.stopped = True

    # ------------------------------------------------------------ the end of a step, on the host

    def _settle_host(self, st: _StepState, order: list[str], first: bool):
        """The step's loss, global gradient norm and non-finite origin; a full step's remaining statistics."""
        loss = float(st.loss) if st.loss is not None else None
        grad_norm = math.sqrt(sum(st.grad_sq.values())) if st.grad_sq else None
        updated = []  # (layer, "weight"/"bias", finite after optimizer.step())
        is_finite, view = statistics.is_finite, self._views
        for name in order:
            entry = st.entries.get(name)
            for kind, p in self._params_of(name):
                if kind == "weight" and entry is not None and entry.pop("kept", False):
                    tracker = self._trackers[name]
                    norm = tracker.update_norm(st.index)
                    entry["update_norm"] = norm if norm is not None and math.isfinite(norm) else None
                    finite = tracker.after_finite
                    updated.append((name, kind, is_finite(view(p)) if finite is None else finite))
                else:
                    updated.append((name, kind, is_finite(view(p))))
        origin = self._origin_host(st, order, loss, grad_norm, updated)
        if origin is not None and not st.full:
            st.full = True  # the step where something went non-finite is recorded in full
            self._full_from_tensors(st, order, first)
        if st.full:
            for name in order:
                layer = self.found.layers[name]
                entry = st.entries.setdefault(name, {})
                saturation = SATURATION.get(layer.activation)
                if "z" not in entry or (first and saturation is not None):  # not known at z's hook
                    entry["z"], st.dead[name] = host.preactivation(st.z[name], layer.kind.unit_dim, saturation)
                if "a" not in entry:
                    entry["a"] = host.activation(st.a[name], layer.kind.unit_dim, st.dead.get(name, 0))
            st.loss_in = host.probabilities(st.outputs) if self._probabilities(st) else None
            if st.targets is not None and st.outputs is not None and self.task == "classification":
                st.accuracy = host.accuracy(st.outputs, st.targets, bool(self._from_logits))
        return loss, grad_norm, origin

    def _origin_host(self, st: _StepState, order: list[str], loss: Optional[float], grad_norm: Optional[float],
                     updated: list[tuple[str, str, bool]]) -> Optional[dict]:
        """The first non-finite value of the step in computation order: forward, loss, backward, update."""
        for check in st.forward:
            if not check.resolved():
                return dict(zip(_WHERE, check.where))
        if loss is not None and not math.isfinite(loss):
            return {"pass": "forward", "tensor": "loss", "layer": None, "module": None}
        if grad_norm is not None and not math.isfinite(grad_norm):
            # a non-finite parameter gradient: which gradient hook saw one first, in the order backward ran
            for where, g in st.backward:
                if not host.finite(g):
                    return dict(zip(_WHERE, where))
            for name in reversed(order):
                layer = self.found.layers[name]
                for tensor, param in (("weight-gradient", layer.weight), ("bias-gradient", layer.bias)):
                    sq = st.grad_sq.get(id(param)) if param is not None else None
                    if sq is not None and not math.isfinite(sq):
                        return {"pass": "backward", "tensor": tensor, "layer": name, "module": name}
        for name, kind, ok in updated:
            if not ok:
                return {"pass": "update", "tensor": kind, "layer": name, "module": name}
        return None

    def _full_from_tensors(self, st: _StepState, order: list[str], first: bool) -> None:
        """A light step turned full: every statistic from the tensors the step still holds (z and a as they
        are now; W and b after the update, so marked)."""
        for name in order:
            layer = self.found.layers[name]
            unit_dim, saturation = layer.kind.unit_dim, SATURATION.get(layer.activation)
            entry = st.entries[name] = {}
            entry["z"], dead = host.preactivation(st.z[name], unit_dim, saturation)
            entry["a"] = host.activation(st.a[name], unit_dim, dead)
            entry["W"] = host.weight(host.view(layer.weight), first)
            entry["W"]["after_update"] = True
            if layer.bias is not None:
                entry["b"] = statistics.bias_stats(host.view(layer.bias))
            gw, gb = self._layer_grads(layer)
            if gw is not None:
                entry["gW"] = host.gradient(gw, True)[0]
            if gb is not None:
                entry["gb"] = host.gradient(gb, False)[0]

    # ------------------------------------------------------------ the end of a step, on a device

    def _settle_device(self, st: _StepState, order: list[str], first: bool):
        # the non-finite check of the step: one fused reduction (a norm per tensor) over every forward
        # tensor the hooks saw and every layer parameter after optimizer.step()
        params = [(n, kind, p.detach()) for n in order for kind, p in self._params_of(n)]
        checked = [c.tensor.detach() for c in st.forward] + [p for _, _, p in params]
        norms = list(torch._foreach_norm(checked)) if checked else []
        grads_in_order = self._gradient_checks(st, order)
        head = ([st.loss] if st.loss is not None else []) + norms + [v for _, v in grads_in_order] + st.all_grad_norms
        if st.full:
            self._queue_full(st, order, first)
        values = st.batch.resolve(head)  # the step's one transfer: checks, loss, and a full step's statistics
        loss = values.pop(0) if st.loss is not None else None
        n_fwd, n_par, n_lay = len(st.forward), len(params), len(grads_in_order)
        fwd, upd = values[:n_fwd], values[n_fwd:n_fwd + n_par]
        pgrads = values[n_fwd + n_par:n_fwd + n_par + n_lay]
        every_grad = values[n_fwd + n_par + n_lay:]
        grad_norm = math.sqrt(sum(v * v for v in every_grad)) if every_grad else None
        origin = self._origin(st, fwd, loss, grads_in_order, pgrads, params, upd)
        if origin is not None and not st.full:
            st.full = True  # the step where something went non-finite is recorded in full
            for name in order:
                self._forward_stats(st, self.found.layers[name], "z", st.z[name])
                self._forward_stats(st, self.found.layers[name], "a", st.a[name])
            self._queue_full(st, order, first)
            st.batch.resolve()
        return loss, grad_norm, origin

    def _step_record(self, st: _StepState, order: list[str], first: bool, loss: Optional[float],
                     grad_norm: Optional[float], origin: Optional[dict]) -> dict:
        """The step record, laid out by nnprobe's record builder from the statistics taken on the device."""
        rec = records.StepRecordBuilder(st.index, full=st.full, weight_distribution=first)
        if not st.full:  # the light record: loss, grad_norm, nonfinite (a layer would add nothing to it)
            order = []
        for name in order:
            got = st.entries.get(name, {})
            rec.layer(name, z=got.get("z"), a=got.get("a"), W=got.get("W"), b=got.get("b"),
                      saturation=SATURATION.get(self.found.layers[name].activation))
        if loss is not None:
            rec.loss(loss, st.loss_in)
        for name in order:
            got = st.entries.get(name, {})
            if "gW" in got or "gb" in got:
                rec.grads(name, gW=got.get("gW"), gb=got.get("gb"))
        if grad_norm is not None:
            rec.grad_norm(grad_norm)
        rec.before_update()
        for name in order:
            rec.update(name, norm=st.entries.get(name, {}).get("update_norm"))
        rec.accuracy(st.accuracy)
        record = rec.record()
        record["nonfinite"] = origin  # the producing module, which the builder's layer-level view cannot name
        if self.errors.step_count:
            record["probe_errors"] = self.errors.step_count
        return record

    def _gradient_checks(self, st: _StepState, order: list[str]) -> list[tuple[dict, torch.Tensor]]:
        """The parameter gradients' norms as non-finite checks, from the last layer back (backward order)."""
        out = []
        for name in reversed(order):
            gw, gb = st.grads.get(name, (None, None))
            for tensor, g in (("weight-gradient", gw), ("bias-gradient", gb)):
                if g is not None:
                    norm = st.grad_norms.get(id(self._param(name, tensor)))
                    out.append(({"pass": "backward", "tensor": tensor, "layer": name, "module": name},
                                norm if norm is not None else torch.linalg.vector_norm(g)))
        return out

    def _param(self, name: str, tensor: str) -> torch.Tensor:
        layer = self.found.layers[name]
        return layer.weight if tensor == "weight-gradient" else layer.bias

    @staticmethod
    def _confirmed(t: torch.Tensor) -> bool:
        """Whether a check that came out non-finite holds a non-finite entry (and not a sum that overflowed)."""
        return not bool(torch.isfinite(t.detach()).all())

    def _origin(self, st, fwd, loss, grads_in_order, pgrads, params, upd) -> Optional[dict]:
        """The first non-finite value of the step in computation order: forward, loss, backward, update."""
        for check, v in zip(st.forward, fwd):
            if not math.isfinite(v) and self._confirmed(check.tensor):
                return dict(zip(_WHERE, check.where))
        if loss is not None and not math.isfinite(loss):
            return {"pass": "forward", "tensor": "loss", "layer": None, "module": None}
        if not all(math.isfinite(v) for v in pgrads):
            # a non-finite parameter gradient: which gradient hook saw one first, in the order backward ran
            sums = stats.transfer(list(torch._foreach_norm([g.detach() for _, g in st.backward])))
            for (where, g), v in zip(st.backward, sums):
                if not math.isfinite(v) and self._confirmed(g):
                    return dict(zip(_WHERE, where))
            for (where, _), v in zip(grads_in_order, pgrads):
                if not math.isfinite(v):
                    return where
        for (name, kind, _), v in zip(params, upd):
            if not math.isfinite(v):
                return {"pass": "update", "tensor": kind, "layer": name, "module": name}
        return None

    def _queue_full(self, st: _StepState, order: list[str], first: bool) -> None:
        """Queue every full-record statistic not queued yet; the dicts fill in when the batch resolves."""
        before = [st.w_before.get(name, self.found.layers[name].weight.detach()) for name in order]
        biases = [self.found.layers[name].bias for name in order]
        w_norms = torch._foreach_norm(before) if before else []
        present = [b.detach() for b in biases if b is not None]
        b_norms = iter(torch._foreach_norm(present) if present else [])
        # fused over the layers: every gradient's max |entry|, every ||W_after - W_before||
        grads = [g for name in order for g in st.grads.get(name, (None, None)) if g is not None]
        maxabs = dict(zip(map(id, grads), torch._foreach_norm(grads, math.inf))) if grads else {}
        moved = [name for name in order if name in st.w_before]
        if moved:
            diffs = torch._foreach_sub([self.found.layers[n].weight.detach() for n in moved],
                                       [st.w_before[n] for n in moved])
            update_norms = dict(zip(moved, torch._foreach_norm(diffs)))
        else:
            update_norms = {}
        for name, w, w_norm, b in zip(order, before, w_norms, biases):
            layer = self.found.layers[name]
            entry = st.entries[name] = {}
            z, a = st.z[name], st.a[name]
            saturation = SATURATION.get(layer.activation)
            zp = st.forward_parts.get((name, "z"))
            if zp is None or (saturation is not None and first):  # the activation was not known at z's hook
                zp = stats.forward_parts(z, "z", layer.kind.unit_dim, saturation)
            ap = st.forward_parts.get((name, "a"))
            if ap is None:
                ap = stats.forward_parts(a, "a", layer.kind.unit_dim, None)

            def finish_forward(v, entry=entry, z=z, a=a, saturation=saturation, k=len(zp)):
                entry["z"] = stats.forward_dict(v[:k], "z", z, saturation)
                entry["a"] = stats.forward_dict(v[k:], "a", a, None, dead=stats.dead_units(v[:k]))
            st.batch.add(zp + ap, finish_forward)
            self._queue_params(st, layer, entry, first, w, w_norm, b, next(b_norms) if b is not None else None,
                               maxabs, update_norms.get(name))
        st.loss_in = None
        if self._probabilities(st):
            p = st.outputs
            st.batch.add(stats.probability_parts(p), lambda v, p=p: setattr(st, "loss_in", stats.probability_dict(v, p)))
        if st.targets is not None and st.outputs is not None and self.task == "classification":
            acc = self._accuracy(st.outputs.detach(), st.targets.detach())
            if acc is not None:
                st.batch.add([acc], lambda v: setattr(st, "accuracy", v[0]))

    def _queue_params(self, st: _StepState, layer: Layer, entry: dict, first: bool, before: torch.Tensor,
                      w_norm: torch.Tensor, b: Optional[torch.Tensor], b_norm: Optional[torch.Tensor],
                      maxabs: dict[int, torch.Tensor], update_norm: Optional[torch.Tensor]) -> None:
        """W (the weights this step's forward used, when before_update saw them), b, gW, gb, ||W_after - W_before||."""
        gw, gb = st.grads.get(layer.name, (None, None))
        has_before = update_norm is not None
        sections: list[tuple[str, list]] = [("W", [w_norm] + stats.weight_parts(before, first))]
        if b is not None:
            sections.append(("b", [b_norm] + stats.bias_parts(b)))
        for key, g, param in (("gW", gw, layer.weight), ("gb", gb, b)):
            if g is not None:
                norm = st.grad_norms.get(id(param))
                sections.append((key, [norm if norm is not None else torch.linalg.vector_norm(g), maxabs[id(g)]]
                                 + stats.gradient_parts(g, key == "gW")))
        if has_before:  # the builder divides it by ||W_before|| (update_ratio)
            sections.append(("update_norm", [update_norm]))
        finishers = {
            "W": lambda v: stats.weight_dict(v[1:], before, v[0]),
            "b": lambda v: stats.bias_dict(v[1:], b, v[0]),
            "gW": lambda v: stats.gradient_dict(v[2:], gw, v[0], v[1], True),
            "gb": lambda v: stats.gradient_dict(v[2:], gb, v[0], v[1], False),
            "update_norm": lambda v: v[0] if math.isfinite(v[0]) else None,
        }

        def finish(v, entry=entry):
            at = 0
            for key, parts in sections:
                entry[key] = finishers[key](v[at:at + len(parts)])
                at += len(parts)
            if not has_before:  # before_update was not called this step: these are the weights after the update
                entry["W"]["after_update"] = True
        st.batch.add([p for _, parts in sections for p in parts], finish)

    def _probabilities(self, st: _StepState) -> bool:
        """Whether this step's outputs are probabilities a log is taken of (textbook bce / cross-entropy)."""
        return (self.loss_kind in ("bce", "cross_entropy") and st.outputs is not None and not self._from_logits
                and st.outputs.is_floating_point())

    def _accuracy(self, out: torch.Tensor, targets: torch.Tensor) -> Optional[torch.Tensor]:
        if out.dim() == 0 or out.shape[0] != targets.shape[0]:
            return None
        if out.dim() >= 2 and out.shape[-1] > 1:
            pred = out.argmax(dim=-1)
            labels = targets.argmax(dim=-1) if targets.dim() == out.dim() else targets
        else:
            threshold = 0.0 if self._from_logits else 0.5
            pred = (out.reshape(out.shape[0], -1)[:, 0] >= threshold).to(torch.long)
            labels = targets.reshape(targets.shape[0], -1)[:, 0].to(torch.long)
        if pred.shape != labels.shape:
            return None
        return (pred == labels.to(pred.dtype)).to(torch.float64).mean()

    # ------------------------------------------------------------ the start record

    def _start_record(self, st: _StepState, order: list[str]) -> dict:
        specs = []
        for i, name in enumerate(order):
            layer = self.found.layers[name]
            activation = layer.activation or "identity"
            is_output = i == len(order) - 1
            if is_output and self._from_logits and self.loss_kind in PROBABILITY_OUTPUT:
                activation = PROBABILITY_OUTPUT[self.loss_kind]  # applied inside the loss, as from_logits: true
            specs.append(records.LayerSpec(name, layer.fan_in, layer.units, activation, is_output))
        opt = st.optimizer
        group = opt.param_groups[0] if opt is not None and getattr(opt, "param_groups", None) else {}
        lr = group.get("lr")
        optimizer = {"kind": type(opt).__name__.lower() if opt is not None else None,
                     "lr": float(lr) if isinstance(lr, (int, float)) else None, "clip_grad_norm": None}
        first_layer = self.found.layers[order[0]] if order else None
        dtype = str(first_layer.weight.dtype).replace("torch.", "") if first_layer else "float32"
        loss = {"kind": self.loss_kind or "mse", "reduction": "mean", "from_logits": bool(self._from_logits),
                "epsilon": 0.0, "l2": 0.0}
        x, t = st.first_input, st.targets
        features = self._features(x, first_layer)
        targets = t.detach().to("cpu", torch.float64).numpy() if t is not None and t.is_floating_point() else None
        units = specs[-1].units if specs else 1
        with np.errstate(all="ignore"):  # a first batch holding NaN or inf is for the detectors to report
            start = records.start_record(
                name=self.run.config.name, seed=None, task=self.task, dtype=dtype, layers=specs, x=features,
                y=targets, n_classes=(units if units > 1 else 2) if self.task == "classification" else None,
                loss=loss, optimizer=optimizer, probes_every=self.every,
                batch_size=int(x.shape[0]) if x is not None and x.dim() > 0 else None,
            )
        if start["data"] is not None:
            start["data"].update(n_train=start["batch_size"], data_from="first batch")
        start["source"] = "torch"
        return start

    @staticmethod
    def _features(x: Optional[torch.Tensor], first_layer: Optional[Layer]):
        """The first batch as (examples, features) on the host: what unnormalized-inputs judges.

        A convolution's features are its input channels, every position of every example one row.
        """
        if x is None or not x.is_floating_point() or x.dim() == 0 or first_layer is None:
            return None
        x = x.detach()
        if x.dim() > 2 and first_layer.kind.unit_dim == 1:
            x = x.movedim(1, -1)
        return x.reshape(-1, x.shape[-1]).to("cpu", torch.float64).numpy()


def _fed_by_a_leaf(model: nn.Module) -> dict[str, tuple[nn.Module, Optional[nn.Module]]]:
    """Leaf modules whose input is always the output of the leaf module before them, and the two modules
    before them (the second None if there is none): the children of a plain nn.Sequential after a leaf
    child (each module used once in the model)."""
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    fed = {}
    for path, m in model.named_modules():
        if not isinstance(m, nn.Sequential) or type(m).forward is not nn.Sequential.forward:
            continue
        children = list(m.named_children())
        for i in range(1, len(children)):
            (_, prev), (name, child) = children[i - 1], children[i]
            leaves = not any(True for _ in prev.children()) and not any(True for _ in child.children())
            if leaves and uses[id(prev)] == 1 and uses[id(child)] == 1:
                fed[f"{path}.{name}" if path else name] = (prev, children[i - 2][1] if i >= 2 else None)
    return fed

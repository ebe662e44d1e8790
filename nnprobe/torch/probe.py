"""`Probe`: nnprobe's step records from a PyTorch training loop, with the detectors `train` runs.

Hooks see each tensor as the step makes it: a forward pre-hook and a forward hook on the leaf
modules (the non-finite check of their input and output, and a layer's z and a), a tensor hook on
each layer's z and a for their gradients, and `before_update` for the parameter gradients.

On CPU (nnprobe.torch.host) every check and statistic reads the tensor's memory through a NumPy
view with nnprobe.probes.statistics, the engine `train` and the Recorder use: a step that is not
recorded in full costs one dot product per hooked tensor (its non-finite check), one per
parameter gradient (the global norm) and one per layer parameter after the update. On another
device, and for bfloat16/float16 models (nnprobe.torch.device, with nnprobe.torch.stats), the same
checks and statistics are batched reductions on the device, moved to the host in one transfer at
the end of the step. What a step holds while it runs is nnprobe.torch.state.
"""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
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
from nnprobe.torch.device import DeviceSteps
from nnprobe.torch.hooks import HookErrors, HookSet
from nnprobe.torch.state import WHERE, Check, StepState
from nnprobe.torch.layers import (SATURATION, Discovery, Layer, ProbeError, activation_name, bounded_by_input, discover,
                                  identify, layer_kind)

LOSS_KINDS = ("mse", "bce", "cross_entropy")
#: parameter dtypes whose steps take the host path on CPU (bfloat16 and float16 models keep the torch path)
_HOST_DTYPES = (torch.float32, torch.float64)
TASKS = ("regression", "classification")


class Step:
    """What the loop tells the probe within one step: the loss, and when the gradients are final."""

    def __init__(self, probe: "Probe", state: Optional[StepState]) -> None:
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
                               remedy="choose a writable directory for Probe(out=...)", argument="Probe(out=...):")
        self.errors = HookErrors()
        self.hooks = HookSet()
        self._flag = StopFlag()
        self._signals = ExitStack()
        self._state: Optional[StepState] = None
        self._step_index = 0
        self._layer_order: list[str] = []  # from the first step
        self._from_logits: Optional[bool] = None
        self._optimizer_info: Optional[dict] = None
        first = next(iter(self.found.layers.values()))
        self._first_weight = first.weight  # where it lives says which path a step takes (host or device)
        self._trackers: dict[str, UpdateTracker] = {}  # on the host: each layer's weights before the update
        self._device = DeviceSteps(self)  # steps whose tensors are not on the CPU in float32/float64
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
        self._state = StepState(index=self._step_index, full=planned, host=on_host,
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
                    st.unchecked = Check(self._input_origin(st, path), x)
                    st.forward.append(st.unchecked)  # decided in the forward hook, by the output's check
                else:
                    self._check(st, self._input_origin(st, path), x)
        return hook

    def _input_origin(self, st: StepState, path: str) -> tuple:
        if not st.forward:
            return ("forward", "input", None, path)
        # made by code between modules (a functional activation, an operation in forward())
        return ("forward", "activation", st.last_layer, f"code before {path}")

    def _check(self, st: StepState, where: tuple, t: torch.Tensor) -> None:
        """The non-finite check of a forward tensor: now, on a NumPy view (host); at the end of the step (device)."""
        st.forward.append(Check(where, t, host.finite(t) if st.host else None))

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
                    st.z_check[path] = Check(where, output)
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

    def _set_activation(self, st: StepState, owner: str, a: torch.Tensor, *, functional: bool,
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

    def _forward_stats(self, st: StepState, layer: Layer, kind: str, x: torch.Tensor, a_kind: str = "other") -> None:
        """A full step's statistics of z or a, taken in the hook: before an in-place activation overwrites z.

        On the host z waits for a when z was found unchanged at a's time on the step before (then one
        pass gives both, and a ReLU's a needs no read of its own), and is taken at once otherwise.
        """
        if not st.host:
            self._device.forward_parts(st, layer, kind, x)
            return
        with np.errstate(all="ignore"):  # NaN and inf are data here
            self._forward_stats_host(st, layer, kind, x, a_kind)

    def _forward_stats_host(self, st: StepState, layer: Layer, kind: str, x: torch.Tensor, a_kind: str) -> None:
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
    def _z_checked(st: StepState, name: str, z: dict) -> None:
        """z's non-finite check, from its statistics' NaN and inf counts."""
        check = st.z_check.pop(name, None)
        if check is not None:
            check.finite = not (z["nan"] or z["posinf"] or z["neginf"])

    # ------------------------------------------------------------ the loop's calls

    def _on_loss(self, st: StepState, loss: torch.Tensor, outputs, targets) -> None:
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

    def _read_grads(self, st: StepState, optimizer, late: bool = False) -> None:
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
        self._device.read_grads(st, late)

    def _read_grads_host(self, st: StepState, late: bool) -> None:
        """One dot product per gradient (its sum of squares); on a full step, each layer's gradient
        statistics in one pass (which give that sum too), W and b as the forward used them, and a
        copy of W for the update's norm."""
        sq = st.grad_sq
        if st.full:
            distribution = not self._layer_order
            for name, layer in self.found.layers.items():
                entry = st.entries.setdefault(name, {})
                gw, gb = layer.grads()
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

    # ------------------------------------------------------------ the end of a step

    def _end_step(self, st: Optional[StepState], failed: bool) -> None:
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

    def _record(self, st: StepState) -> None:
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
            loss, grad_norm, origin = self._device.settle(st, order, first)
        if first:
            self.run.begin(self._start_record(st, order))
        if self.run.step(self._step_record(st, order, first, loss, grad_norm, origin)) is not None:
            self.stopped = True

    # ------------------------------------------------------------ the end of a step, on the host

    def _settle_host(self, st: StepState, order: list[str], first: bool):
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

    def _origin_host(self, st: StepState, order: list[str], loss: Optional[float], grad_norm: Optional[float],
                     updated: list[tuple[str, str, bool]]) -> Optional[dict]:
        """The first non-finite value of the step in computation order: forward, loss, backward, update."""
        for check in st.forward:
            if not check.resolved():
                return dict(zip(WHERE, check.where))
        if loss is not None and not math.isfinite(loss):
            return {"pass": "forward", "tensor": "loss", "layer": None, "module": None}
        if grad_norm is not None and not math.isfinite(grad_norm):
            # a non-finite parameter gradient: which gradient hook saw one first, in the order backward ran
            for where, g in st.backward:
                if not host.finite(g):
                    return dict(zip(WHERE, where))
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

    def _full_from_tensors(self, st: StepState, order: list[str], first: bool) -> None:
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
            gw, gb = layer.grads()
            if gw is not None:
                entry["gW"] = host.gradient(gw, True)[0]
            if gb is not None:
                entry["gb"] = host.gradient(gb, False)[0]

    # ------------------------------------------------------------ the end of a step, on a device

    def _step_record(self, st: StepState, order: list[str], first: bool, loss: Optional[float],
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

    def _probabilities(self, st: StepState) -> bool:
        """Whether this step's outputs are probabilities a log is taken of (textbook bce / cross-entropy)."""
        return (self.loss_kind in ("bce", "cross_entropy") and st.outputs is not None and not self._from_logits
                and st.outputs.is_floating_point())

    # ------------------------------------------------------------ the start record

    def _start_record(self, st: StepState, order: list[str]) -> dict:
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

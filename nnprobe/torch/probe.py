"""`Probe`: nnprobe's step records from a PyTorch training loop, with the detectors `train` runs.

Hooks see each tensor as the step makes it: a forward pre-hook and a forward hook on every leaf
module (the non-finite check of its input and output, and a layer's z and a), a tensor hook on
each layer's z and a for their gradients, and `before_update` for the parameter gradients. A
step that is not recorded in full costs one float64 sum per hooked tensor and one transfer of
those sums to the host at the end of the step; a recorded step queues its statistics on the
device and moves them in the same single transfer.
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
from nnprobe.diagnose.detectors.outputs import PROBABILITY_OUTPUT
from nnprobe.train.recorded import RecordedRun, recorded_config
from nnprobe.train.signals import StopFlag, catch_signals
from nnprobe.probes import records
from nnprobe.torch import stats
from nnprobe.torch.hooks import HookErrors, HookSet
from nnprobe.torch.layers import SATURATION, Discovery, Layer, ProbeError, activation_name, discover, identify

LOSS_KINDS = ("mse", "bce", "cross_entropy")
TASKS = ("regression", "classification")


@dataclass
class _Check:
    """One tensor of the step's non-finite check, in computation order, and what it would name."""

    where: dict
    tensor: torch.Tensor  # checked at the end of the step, with every other tensor, by one fused reduction


@dataclass
class _StepState:
    index: int
    full: bool
    forward: list[_Check] = field(default_factory=list)
    backward: list[_Check] = field(default_factory=list)
    z: dict[str, torch.Tensor] = field(default_factory=dict)
    a: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # layers in execution order
    follows: dict[str, str] = field(default_factory=dict)  # activation module path -> its layer
    pending: Optional[str] = None  # the last layer whose activation output is not known yet
    last_output: Optional[torch.Tensor] = None
    last_layer: Optional[str] = None
    first_input: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    outputs: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    grads: Optional[dict[str, tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]] = None
    grad_norms: dict[int, torch.Tensor] = field(default_factory=dict)  # id(grad) -> its norm
    all_grad_norms: list[torch.Tensor] = field(default_factory=list)  # every parameter's, for grad_norm
    w_before: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: Any = None
    batch: stats.Batch = field(default_factory=stats.Batch)
    forward_parts: dict[tuple[str, str], list[torch.Tensor]] = field(default_factory=dict)
    tensor_hooks: HookSet = field(default_factory=HookSet)
    # a full step's statistics in the log's per-tensor schema, per layer, filled when the batch resolves
    entries: dict[str, dict] = field(default_factory=dict)
    loss_in: Optional[dict] = None
    accuracy: Optional[float] = None


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
        self.run = RecordedRun(config, out, extra_meta={"source": "torch", "torch": torch.__version__})
        self.errors = HookErrors()
        self.hooks = HookSet()
        self._flag = StopFlag()
        self._signals = ExitStack()
        self._state: Optional[_StepState] = None
        self._step_index = 0
        self._layer_order: list[str] = []  # from the first step
        self._from_logits: Optional[bool] = None
        self._optimizer_info: Optional[dict] = None
        self._closed = False
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
        if self._state is not None:
            self._state.tensor_hooks.remove()
            self._state = None
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

    def step(self) -> Step:
        """A context for one optimizer step; after `stopped`, or after close, it records nothing."""
        if self._closed or self.stopped:
            return Step(self, None)
        planned = self._step_index % self.every == 0
        self._state = _StepState(index=self._step_index, full=planned)
        self.errors.step_count = 0
        return Step(self, self._state)

    # ------------------------------------------------------------ hooks

    def _register(self) -> None:
        guard = self.errors.guard
        for path, module in self.found.leaves.items():
            self.hooks.add(module.register_forward_pre_hook(guard(self._pre_hook(path))))
            self.hooks.add(module.register_forward_hook(guard(self._forward_hook(path, module))))

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.errors.add(exc)

    def _pre_hook(self, path: str):
        layer = self.found.layers.get(path)

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
                st.forward.append(_Check(self._input_origin(st, path), x))
        return hook

    def _input_origin(self, st: _StepState, path: str) -> dict:
        if not st.forward:
            return {"pass": "forward", "tensor": "input", "layer": None, "module": path}
        # made by code between modules (a functional activation, an operation in forward())
        return {"pass": "forward", "tensor": "activation", "layer": st.last_layer,
                "module": f"code before {path}"}

    def _forward_hook(self, path: str, module: nn.Module):
        layer = self.found.layers.get(path)
        act = activation_name(module)

        def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
            st = self._state
            if st is None or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if layer is not None and path not in st.z:
                if st.pending is not None:
                    self._set_activation(st, st.pending, st.z[st.pending], functional=False)
                where = {"pass": "forward", "tensor": "pre-activation", "layer": path, "module": path}
                st.z[path] = output
                st.order.append(path)
                st.pending = path
                st.last_layer = path
                if st.full:
                    self._queue_forward(st, layer, "z", output)
                self._watch_gradient(st, output, path, "pre-activation-gradient", path)
            elif act is not None and st.pending is not None and (x is st.z[st.pending] or output is st.z[st.pending]):
                owner = st.pending
                st.follows[path] = owner
                self._name_activation(self.found.layers[owner], act)
                where = {"pass": "forward", "tensor": "activation", "layer": owner, "module": path}
                self._set_activation(st, owner, output, functional=False, module=path)
            else:
                where = {"pass": "forward", "tensor": "output", "layer": st.last_layer, "module": path}
            st.forward.append(_Check(where, output))
            st.last_output = output
        return hook

    def _name_activation(self, layer: Layer, name: str) -> None:
        if layer.activation is None:
            layer.activation = name

    def _set_activation(self, st: _StepState, owner: str, a: torch.Tensor, *, functional: bool,
                        module: Optional[str] = None) -> None:
        """The layer's a is known: the activation module's output, or the next layer's input."""
        st.pending = None
        layer = self.found.layers[owner]
        z = st.z[owner]
        if functional:
            if layer.activation is None:
                layer.activation = "identity" if a is z else identify(z.detach(), a.detach())
        st.a[owner] = a
        if a is not z:
            self._watch_gradient(st, a, owner, "activation-gradient", module or owner)
        if st.full:
            self._queue_forward(st, layer, "a", a)

    def _watch_gradient(self, st: _StepState, t: torch.Tensor, layer: str, tensor: str, module: str) -> None:
        if not t.requires_grad:
            return
        where = {"pass": "backward", "tensor": tensor, "layer": layer, "module": module}

        def on_grad(grad: torch.Tensor) -> None:
            if self._state is st:
                st.backward.append(_Check(where, grad))  # checked only if a parameter gradient is not finite
        st.tensor_hooks.add(t.register_hook(self.errors.guard(on_grad)))

    def _queue_forward(self, st: _StepState, layer: Layer, kind: str, x: torch.Tensor) -> None:
        """A full step's statistics of z or a, taken in the hook: before an in-place activation overwrites z."""
        saturation = SATURATION.get(layer.activation) if kind == "z" else None
        st.forward_parts[(layer.name, kind)] = stats.forward_parts(x, kind, layer.kind.unit_dim, saturation)

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
            where = {"pass": "forward", "tensor": "activation", "layer": last, "module": "code before the loss"}
            st.forward.append(_Check(where, st.outputs))

    def _read_grads(self, st: _StepState, optimizer) -> None:
        """Every parameter's gradient now: the global norm (one fused reduction), and a full step's statistics."""
        if optimizer is not None:
            st.optimizer = optimizer
        params = [p for p in self._parameters if p.grad is not None]
        grads = [p.grad.detach() for p in params]
        norms = torch._foreach_norm(grads) if grads else []
        st.grad_norms = {id(p): n for p, n in zip(params, norms)}
        st.all_grad_norms = list(norms)
        st.grads = {}
        for name, layer in self.found.layers.items():
            w, b = layer.weight, layer.bias
            st.grads[name] = (w.grad.detach() if w.grad is not None else None,
                              b.grad.detach() if b is not None and b.grad is not None else None)
            if st.full:
                st.w_before[name] = w.detach().clone()

    # ------------------------------------------------------------ the end of a step

    def _end_step(self, st: Optional[_StepState], failed: bool) -> None:
        if st is None:
            return
        try:
            if not failed:
                self._record(st)
        except Exception as exc:  # a bug in the probe: count it, keep training
            self.errors.add(exc)
        finally:
            st.tensor_hooks.remove()
            self._state = None
            self._step_index += 1
        if self._flag.signal is not None and not self.stopped:
            self.stopped = True
            self._signals.close()  # a second Ctrl-C interrupts as usual

    def _params_of(self, name: str) -> list[tuple[str, torch.Tensor]]:
        layer = self.found.layers[name]
        out = [("weight", layer.weight)]
        if layer.bias is not None:
            out.append(("bias", layer.bias))
        return out

    def _record(self, st: _StepState) -> None:
        if st.grads is None:
            self._read_grads(st, None)
        for name, z in list(st.z.items()):
            if name not in st.a:
                self._set_activation(st, name, z, functional=True)
        first = not self._layer_order
        if first:
            self._layer_order = list(st.order)
        order = [n for n in self._layer_order if n in st.z]
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
                self._queue_forward(st, self.found.layers[name], "z", st.z[name])
                self._queue_forward(st, self.found.layers[name], "a", st.a[name])
            self._queue_full(st, order, first)
            st.batch.resolve()
        if first:
            self.run.begin(self._start_record(st, order))
        if self.run.step(self._step_record(st, order, first, loss, grad_norm, origin)) is not None:
            self.stopped = True

    def _step_record(self, st: _StepState, order: list[str], first: bool, loss: Optional[float],
                     grad_norm: Optional[float], origin: Optional[dict]) -> dict:
        """The step record, laid out by nnprobe's record builder from the statistics taken on the device."""
        rec = records.StepRecordBuilder(st.index, full=st.full, weight_distribution=first)
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
    def _confirmed(check: _Check) -> bool:
        """Whether a check that came out non-finite holds a non-finite entry (and not a sum that overflowed)."""
        return not bool(torch.isfinite(check.tensor.detach()).all())

    def _origin(self, st, fwd, loss, grads_in_order, pgrads, params, upd) -> Optional[dict]:
        """The first non-finite value of the step in computation order: forward, loss, backward, update."""
        for check, v in zip(st.forward, fwd):
            if not math.isfinite(v) and self._confirmed(check):
                return check.where
        if loss is not None and not math.isfinite(loss):
            return {"pass": "forward", "tensor": "loss", "layer": None, "module": None}
        if not all(math.isfinite(v) for v in pgrads):
            # a non-finite parameter gradient: which gradient hook saw one first, in the order backward ran
            sums = stats.transfer(list(torch._foreach_norm([c.tensor.detach() for c in st.backward])))
            for check, v in zip(st.backward, sums):
                if not math.isfinite(v) and self._confirmed(check):
                    return check.where
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

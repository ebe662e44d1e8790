"""The end of a probed step whose tensors live on a device (CUDA; bfloat16 and float16 models on the
CPU): every check and statistic is a torch reduction on the device, queued in a stats.Batch and moved
to the host in one transfer at the end of the step. CPU float32/float64 steps take the host path in
probe.py instead (NumPy views, nnprobe.torch.host).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from nnprobe.torch import stats
from nnprobe.torch.layers import SATURATION, Layer
from nnprobe.torch.state import WHERE, StepState

if TYPE_CHECKING:
    from nnprobe.torch.probe import Probe


class DeviceSteps:
    """The device side of one Probe: its forward statistics, its gradients and the end of its steps."""

    def __init__(self, probe: "Probe") -> None:
        self.probe = probe

    def forward_parts(self, st: StepState, layer: Layer, kind: str, x: torch.Tensor) -> None:
        """A full step's statistics of z or a, queued in the hook (before an in-place activation overwrites z)."""
        saturation = SATURATION.get(layer.activation) if kind == "z" else None
        st.forward_parts[(layer.name, kind)] = stats.forward_parts(x, kind, layer.kind.unit_dim, saturation)

    def read_grads(self, st: StepState, late: bool) -> None:
        """Every parameter gradient's norm in one fused reduction; on a full step, W before the update."""
        for name, layer in self.probe.found.layers.items():
            st.grads[name] = layer.grads()
        params = [p for p in self.probe._parameters if p.grad is not None]
        grads = [p.grad.detach() for p in params]
        norms = torch._foreach_norm(grads) if grads else []
        st.grad_norms = {id(p): n for p, n in zip(params, norms)}
        st.all_grad_norms = list(norms)
        if st.full and not late:
            for name, layer in self.probe.found.layers.items():
                st.w_before[name] = layer.weight.detach().clone()

    def settle(self, st: StepState, order: list[str], first: bool):
        # the non-finite check of the step: one fused reduction (a norm per tensor) over every forward
        # tensor the hooks saw and every layer parameter after optimizer.step()
        params = [(n, kind, p.detach()) for n in order for kind, p in self.probe._params_of(n)]
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
                self.forward_parts(st, self.probe.found.layers[name], "z", st.z[name])
                self.forward_parts(st, self.probe.found.layers[name], "a", st.a[name])
            self._queue_full(st, order, first)
            st.batch.resolve()
        return loss, grad_norm, origin

    def _gradient_checks(self, st: StepState, order: list[str]) -> list[tuple[dict, torch.Tensor]]:
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
        layer = self.probe.found.layers[name]
        return layer.weight if tensor == "weight-gradient" else layer.bias

    @staticmethod
    def _confirmed(t: torch.Tensor) -> bool:
        """Whether a check that came out non-finite holds a non-finite entry (and not a sum that overflowed)."""
        return not bool(torch.isfinite(t.detach()).all())

    def _origin(self, st, fwd, loss, grads_in_order, pgrads, params, upd) -> Optional[dict]:
        """The first non-finite value of the step in computation order: forward, loss, backward, update."""
        for check, v in zip(st.forward, fwd):
            if not math.isfinite(v) and self._confirmed(check.tensor):
                return dict(zip(WHERE, check.where))
        if loss is not None and not math.isfinite(loss):
            return {"pass": "forward", "tensor": "loss", "layer": None, "module": None}
        if not all(math.isfinite(v) for v in pgrads):
            # a non-finite parameter gradient: which gradient hook saw one first, in the order backward ran
            sums = stats.transfer(list(torch._foreach_norm([g.detach() for _, g in st.backward])))
            for (where, g), v in zip(st.backward, sums):
                if not math.isfinite(v) and self._confirmed(g):
                    return dict(zip(WHERE, where))
            for (where, _), v in zip(grads_in_order, pgrads):
                if not math.isfinite(v):
                    return where
        for (name, kind, _), v in zip(params, upd):
            if not math.isfinite(v):
                return {"pass": "update", "tensor": kind, "layer": name, "module": name}
        return None

    def _queue_full(self, st: StepState, order: list[str], first: bool) -> None:
        """Queue every full-record statistic not queued yet; the dicts fill in when the batch resolves."""
        before = [st.w_before.get(name, self.probe.found.layers[name].weight.detach()) for name in order]
        biases = [self.probe.found.layers[name].bias for name in order]
        w_norms = torch._foreach_norm(before) if before else []
        present = [b.detach() for b in biases if b is not None]
        b_norms = iter(torch._foreach_norm(present) if present else [])
        # fused over the layers: every gradient's max |entry|, every ||W_after - W_before||
        grads = [g for name in order for g in st.grads.get(name, (None, None)) if g is not None]
        maxabs = dict(zip(map(id, grads), torch._foreach_norm(grads, math.inf))) if grads else {}
        moved = [name for name in order if name in st.w_before]
        if moved:
            diffs = torch._foreach_sub([self.probe.found.layers[n].weight.detach() for n in moved],
                                       [st.w_before[n] for n in moved])
            update_norms = dict(zip(moved, torch._foreach_norm(diffs)))
        else:
            update_norms = {}
        for name, w, w_norm, b in zip(order, before, w_norms, biases):
            layer = self.probe.found.layers[name]
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
        if self.probe._probabilities(st):
            p = st.outputs
            st.batch.add(stats.probability_parts(p), lambda v, p=p: setattr(st, "loss_in", stats.probability_dict(v, p)))
        if st.targets is not None and st.outputs is not None and self.probe.task == "classification":
            acc = self.accuracy(st.outputs.detach(), st.targets.detach())
            if acc is not None:
                st.batch.add([acc], lambda v: setattr(st, "accuracy", v[0]))

    def _queue_params(self, st: StepState, layer: Layer, entry: dict, first: bool, before: torch.Tensor,
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

    def accuracy(self, out: torch.Tensor, targets: torch.Tensor) -> Optional[torch.Tensor]:
        if out.dim() == 0 or out.shape[0] != targets.shape[0]:
            return None
        if out.dim() >= 2 and out.shape[-1] > 1:
            pred = out.argmax(dim=-1)
            labels = targets.argmax(dim=-1) if targets.dim() == out.dim() else targets
        else:
            threshold = 0.0 if self.probe._from_logits else 0.5
            pred = (out.reshape(out.shape[0], -1)[:, 0] >= threshold).to(torch.long)
            labels = targets.reshape(targets.shape[0], -1)[:, 0].to(torch.long)
        if pred.shape != labels.shape:
            return None
        return (pred == labels.to(pred.dtype)).to(torch.float64).mean()

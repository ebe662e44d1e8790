"""The trainer: one optimizer step of the config's MLP, and the step record the probes make of it."""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator, Optional

import numpy as np

import nnprobe
from nnprobe.config import Config
from nnprobe.data import Dataset
from nnprobe.nn.activations import Activation, Identity, ReLU
from nnprobe.nn.losses import Loss
from nnprobe.nn.model import MLP, build_mlp, output_units
from nnprobe.nn.optim import clip_by_global_norm, global_norm, make_optimizer
from nnprobe.probes import kernel
from nnprobe.probes import statistics as probes
from nnprobe.train.runlog import SCHEMA_VERSION

#: z (and a) up to this size are summarised at the end of the step rather than when made (Trainer._observe_forward)
_DEFER_BYTES = 1 << 17


class Trainer:
    """Holds the model, data and optimizer of one run and produces its step records."""

    def __init__(self, config: Config, data: Dataset, hidden_activation=None) -> None:
        self.config = config
        self.data = data
        seq = np.random.SeedSequence(config.seed)
        _, init_seq, shuffle_seq = seq.spawn(3)
        self.dtype = np.dtype(config.model.dtype)
        n_targets = data.y_train.shape[1] if data.task == "regression" else 1
        self.units = output_units(data.task, config.loss.kind, config.model.output, n_targets, data.n_classes)
        self.model: MLP = build_mlp(config.model, data.n_features, self.units, np.random.default_rng(init_seq),
                                    hidden=hidden_activation)
        out_act = self.model.output.activation
        self.loss = Loss(config.loss.kind, reduction=config.loss.reduction, from_logits=config.loss.from_logits,
                         epsilon=config.loss.epsilon, output=out_act)
        self.optimizer = make_optimizer(self.model.params(), config.optimizer)
        self.shuffle_rng = np.random.default_rng(shuffle_seq)
        self.x = data.x_train.astype(self.dtype)
        self.t = self.loss.targets(data.y_train, self.units, self.dtype)
        self.labels = data.y_train if data.task == "classification" else None
        self.x_val = data.x_val.astype(self.dtype)
        self.t_val = self.loss.targets(data.y_val, self.units, self.dtype) if len(data.y_val) else None
        self.input_finite = probes.is_finite(self.x)
        n = self.x.shape[0]
        self.batch_size = min(config.training.batch_size or n, n)
        self.batches_per_epoch = math.ceil(n / self.batch_size)
        if config.training.epochs is not None:
            self.total_steps = config.training.epochs * self.batches_per_epoch
        else:
            self.total_steps = config.training.steps or 1000
        self.probing = config.probes.enabled
        self.every = config.probes.every
        # plain SGD without clipping in float32: the update can take the gradients' statistics (_fused_update)
        self._fusable = (config.optimizer.kind == "sgd" and config.optimizer.clip_grad_norm is None
                         and self.dtype == np.float32
                         and all(p.dtype == np.float32 and p.flags.c_contiguous for p in self.optimizer.params))
        # per layer, which passes the forward statistics may share (probes.forward_stats)
        self._stat_kinds = ["relu" if type(l.activation) is ReLU else "identity" if type(l.activation) is Identity
                            else "other" for l in self.model.layers]
        # per layer, whether its forward statistics may wait until the end of the step: only nnprobe's own
        # activations are known to leave z and a alone in the backward pass (user code may write into them)
        self._may_defer = [type(l.activation).__module__ == Activation.__module__ for l in self.model.layers]
        # per parameter (params() order), an upper bound on its max |entry| (None: unknown), and the
        # largest bound that proves an update finite (_update_origin)
        self._bound: list[Optional[float]] = [None] * (2 * len(self.model.layers))
        self._bound_limit = float(np.finfo(self.dtype).max) / 2
        self._sqs: list[float] = []  # this step's squared gradient norms, in params() order

    # -- batches

    def batches(self) -> Iterator[np.ndarray | None]:
        """Index arrays per step (None = the whole training set, no copy)."""
        n = self.x.shape[0]
        if self.batch_size >= n:
            while True:
                yield None
        while True:
            order = self.shuffle_rng.permutation(n) if self.config.training.shuffle else np.arange(n)
            for start in range(0, n, self.batch_size):
                yield order[start:start + self.batch_size]

    # -- records

    def start_record(self) -> dict:
        cfg, d = self.config, self.data
        x = d.x_train.astype(np.float64)
        layers = [
            {"name": l.name, "fan_in": l.fan_in, "units": l.units, "activation": l.activation_name,
             "is_output": i == len(self.model.layers) - 1}
            for i, l in enumerate(self.model.layers)
        ]
        data = {
            "n_train": int(x.shape[0]), "n_val": int(d.x_val.shape[0]), "n_features": int(x.shape[1]),
            "n_classes": d.n_classes,
            "input_mean": x.mean(axis=0).tolist(), "input_std": x.std(axis=0).tolist(),
            "input_min": x.min(axis=0).tolist(), "input_max": x.max(axis=0).tolist(),
            "target_mean": None, "target_std": None, "target_min": None, "target_max": None,
        }
        if d.task == "regression":
            y = d.y_train.astype(np.float64)
            data.update(target_mean=float(y.mean()), target_std=float(y.std()),
                        target_min=float(y.min()), target_max=float(y.max()))
        return {
            "type": "start", "schema": SCHEMA_VERSION, "nnprobe": nnprobe.__version__, "name": cfg.name,
            "seed": cfg.seed, "task": d.task, "dtype": cfg.model.dtype, "probes_every": self.every,
            "batch_size": self.batch_size,
            "total_steps": self.total_steps, "layers": layers,
            "loss": {"kind": cfg.loss.kind, "reduction": cfg.loss.reduction, "from_logits": cfg.loss.from_logits,
                     "epsilon": cfg.loss.epsilon, "l2": cfg.loss.l2},
            "optimizer": {"kind": cfg.optimizer.kind, "lr": cfg.optimizer.lr,
                          "clip_grad_norm": cfg.optimizer.clip_grad_norm},
            "data": data,
        }

    # -- probes

    def _probe_all(self, flat_grads: list[np.ndarray], step: int,
                   probe: Optional[probes.StepProbe] = None) -> probes.StepProbe:
        """The full statistics of this step, from the arrays forward and backward cached (W not yet updated).

        `probe`: a planned step's, whose gradient statistics and some forward ones were taken as those
        tensors were made (_observe_forward, _observe_grads); the forward statistics left for the end of
        the step, and W and b, are taken here.
        """
        taken = probe is not None
        if probe is None:
            probe = probes.StepProbe(len(self.model.layers))
        opt = self.optimizer
        for i, layer in enumerate(self.model.layers):
            if not taken or probe.z[i] is None:
                self._forward_stats(probe, i, layer)
            if not taken:
                probe.grads(i, flat_grads[2 * i], flat_grads[2 * i + 1], self._sqs[2 * i], self._sqs[2 * i + 1])
            # the weight distribution is what the init is judged by (step 0); later steps need only the norm,
            # which the last update may have measured already
            probe.params(i, layer.W, layer.b, distribution=step == 0, w_sq=opt.sqs_after[2 * i],
                         b_sums=(opt.sums_after[2 * i + 1], opt.sqs_after[2 * i + 1]))
        return probe

    def _fused_update(self, flat: list[np.ndarray], probe: probes.StepProbe, sqs: list, record: dict,
                      layer_stats: list[dict], origin: Optional[dict]) -> tuple[list[float], Optional[dict]]:
        """SGD's update with each gradient's statistics taken in the same pass; fills in what needed them."""
        norms, passes = self.optimizer.step_measured(flat)
        for j, (g, got) in enumerate(zip(flat, passes)):
            st, sqs[j] = probes.gradient_stats_from_pass(g, got, with_zero_frac=j % 2 == 0)
            (probe.gW if j % 2 == 0 else probe.gb)[j // 2] = st
        record["grad_norm"] = math.sqrt(sum(sqs))
        for i, st in enumerate(layer_stats):
            st["gW"], st["gb"] = probe.gW[i], probe.gb[i]
        if origin is None:
            origin = record["nonfinite"] = self._backward_origin(flat, sqs)
        return norms, origin

    def _observe_forward(self, probe: probes.StepProbe, i: int, layer) -> None:
        """A planned step's pass over z (and a) as soon as the layer made them, while they are in the cache.

        What needs no such pass waits for _probe_all, which takes all of it one layer after another at the
        end of the step: a layer whose fused (leaky) ReLU pass measured z already, and tensors small enough
        to stay in L2 meanwhile. The same Python run back to back instead of once between each layer's
        GEMMs costs a third to a half as much (W=256: 19 -> 12 us a ReLU layer, in the step).
        """
        if not self._may_defer[i] or (layer.measured is None and layer.z.nbytes > _DEFER_BYTES):
            self._forward_stats(probe, i, layer)

    def _forward_stats(self, probe: probes.StepProbe, i: int, layer) -> None:
        probe.forward(i, layer.z, layer.a, self._stat_kinds[i], layer.activation.saturation, layer.measured)

    def _observe_grads(self, probe: probes.StepProbe, sqs: list, i: int, gW: np.ndarray, gb: np.ndarray) -> None:
        """A planned step's gradient statistics and squared norms, taken once each gradient exists."""
        probe.gW[i], sqs[2 * i] = probes.gradient_stats_with_sq(gW, with_zero_frac=True)
        probe.gb[i], sqs[2 * i + 1] = probes.gradient_stats_with_sq(gb, with_zero_frac=False)

    def _forward_origin(self, xb: np.ndarray, fwd: Optional[list[tuple[dict, dict]]] = None) -> Optional[dict]:
        """The first non-finite forward tensor: read off `fwd` when the statistics exist, else one pass each."""
        if not self.input_finite and not probes.is_finite(xb):
            return {"pass": "forward", "tensor": "input", "layer": None}
        for i, layer in enumerate(self.model.layers):
            if fwd is not None:
                z_st, a_st = fwd[i]
                z_bad = z_st["nan"] or z_st["posinf"] or z_st["neginf"]
                a_bad = a_st["nan"] or a_st["posinf"] or a_st["neginf"]
            else:
                z_bad = not probes.is_finite(layer.z)
                a_bad = not z_bad and not probes.is_finite(layer.a)
            if z_bad:
                return {"pass": "forward", "tensor": "pre-activation", "layer": layer.name}
            if a_bad:
                return {"pass": "forward", "tensor": "activation", "layer": layer.name}
        return None

    def _backward_origin(self, grads, sqs: list[float]) -> Optional[dict]:
        if math.isfinite(sum(sqs)):  # every sum of squares finite: every gradient is
            return None
        for i in range(len(self.model.layers) - 1, -1, -1):
            name = self.model.layers[i].name
            for j, tensor in ((2 * i, "weight-gradient"), (2 * i + 1, "bias-gradient")):
                if not math.isfinite(sqs[j]) and not probes.is_finite(grads[j]):
                    return {"pass": "backward", "tensor": tensor, "layer": name}
        return None

    def _update_origin(self, norms: list[float]) -> Optional[dict]:
        """The first non-finite parameter after the update, proved finite without reading it where possible.

        p + delta cannot overflow while max|p| + ||delta|| stays below half the dtype's maximum, so a
        bound on max|p| (set on full steps from the statistics, grown by ||delta|| every step) and the
        update norm the optimizer reports settle it; p is read again (one dot product, whose root
        bounds max|p| anew) only when the bound is unknown or too large.
        """
        origin = None
        params = self.optimizer.params
        measured = self.optimizer.sqs_after
        if None not in measured and math.isfinite(sum(measured)):
            # the update measured every parameter and all are finite; the bounds are not needed while it
            # keeps measuring, and are rebuilt from a dot product if it stops
            self._bound = [None] * len(params)
            return None
        for j, p in enumerate(params):
            bound, step_norm = self._bound[j], norms[j]
            if measured[j] is None and bound is not None and bound + step_norm < self._bound_limit:
                self._bound[j] = bound + step_norm  # (the comparison is False for a NaN or inf norm)
                continue
            sq = probes.sq_norm(p) if measured[j] is None else measured[j]
            norm = math.sqrt(sq) if sq < math.inf else math.inf
            self._bound[j] = norm if norm < self._bound_limit else None
            if origin is None and not sq < math.inf and not probes.is_finite(p):
                layer = self.model.layers[j // 2]
                origin = {"pass": "update", "tensor": "weight" if j % 2 == 0 else "bias", "layer": layer.name}
        return origin

    def _accuracy(self, z: np.ndarray, a: np.ndarray, labels: np.ndarray) -> float:
        scores = z if self.config.loss.from_logits else a
        if self.units == 1:
            threshold = 0.0 if self.config.loss.from_logits else 0.5
            pred = (scores[:, 0] >= threshold).astype(labels.dtype)
        else:
            pred = scores.argmax(axis=1)
        return float(np.count_nonzero(pred == labels)) / labels.shape[0]

    def step(self, step: int, idx: Optional[np.ndarray]) -> dict:
        """Forward, loss, backward, probes, update: the record of one optimizer step."""
        cfg = self.config
        xb = self.x if idx is None else self.x[idx]
        tb = self.t if idx is None else self.t[idx]
        model = self.model
        clip = cfg.optimizer.clip_grad_norm

        if not self.probing:
            model.forward(xb)
            out = model.output
            lo = self.loss(out.z, out.a, tb, probe=False)
            loss_value = lo.value + model.l2_penalty(cfg.loss.l2)
            flat = model.backward(lo.grad_z, cfg.loss.l2).flat()
            if clip is not None:
                clip_by_global_norm(flat, clip)
            self.optimizer.step(flat, want_norms=False)
            origin = None if math.isfinite(loss_value) else {"pass": "forward", "tensor": "loss", "layer": None}
            return {"type": "step", "step": step, "full": False, "loss": loss_value, "grad_norm": None,
                    "nonfinite": origin, "loss_in": None}

        last = self.total_steps - 1
        planned = step % self.every == 0 or step == last
        # a planned full step reads every tensor the step makes once, while it is still in the cache: z and
        # a in the forward pass (or not at all, where the fused ReLU pass measured them), each gradient (all
        # its statistics and its sum of squares) in the backward pass; any other step reads each gradient
        # once for its sum of squares (the global norm, the backward non-finite check). With plain SGD on
        # the C kernel the gradients are not read in the backward pass at all: the update reads each one
        # anyway and takes its statistics in the same pass (_fused_update), after the record has
        # everything that needs the weights before the update
        fused = planned and self._fusable and kernel.active is not None
        probe = probes.StepProbe(len(model.layers)) if planned else None
        sqs: list = [0.0] * (2 * len(model.layers))
        model.forward(xb, partial(self._observe_forward, probe) if planned else None)
        out = model.output
        lo = self.loss(out.z, out.a, tb, probe=True)
        loss_value = lo.value + model.l2_penalty(cfg.loss.l2)
        observe = partial(self._observe_grads, probe, sqs) if planned and not fused else None
        grads = model.backward(lo.grad_z, cfg.loss.l2, observe)
        flat = grads.flat()
        if not planned:
            sqs = [probes.sq_norm(g) for g in flat]
        self._sqs = sqs
        grad_norm = math.sqrt(sum(sqs))
        if grad_norm == math.inf:  # an inf entry, or squares that overflowed: the norm may still be finite
            grad_norm = global_norm(flat)
        if planned:
            self._probe_all(flat, step, probe)

        # on a full step the statistics are the forward non-finite check: each tensor is read once
        origin = self._forward_origin(xb, list(zip(probe.z, probe.a)) if probe is not None else None)
        if origin is None and not math.isfinite(loss_value):
            origin = {"pass": "forward", "tensor": "loss", "layer": None}
        if origin is None and not fused:
            origin = self._backward_origin(flat, sqs)
        full = planned or origin is not None
        if full and not planned:
            probe = self._probe_all(flat, step)
        record: dict = {"type": "step", "step": step, "full": full, "loss": loss_value,
                        "grad_norm": grad_norm, "nonfinite": origin, "loss_in": lo.loss_in}
        layer_stats = None
        if full:
            layer_stats = []
            for i, layer in enumerate(model.layers):
                w_stats = probe.W[i]
                layer_stats.append({"name": layer.name, "z": probe.z[i], "a": probe.a[i], "gW": probe.gW[i],
                                    "gb": probe.gb[i], "W": w_stats, "b": probe.b[i], "update_ratio": None})
                # max|W| (or ||W|| >= max|W|) before the update, and ||b|| >= max|b|, start the bounds
                # _update_origin grows
                finite = origin is None and w_stats["norm"] is not None
                if finite and w_stats.get("min") is not None:
                    self._bound[2 * i] = max(abs(w_stats["min"]), abs(w_stats["max"]))
                else:
                    self._bound[2 * i] = w_stats["norm"] if finite else None
                self._bound[2 * i + 1] = probe.b[i]["norm"] if finite else None
            if self.labels is not None:
                labels = self.labels if idx is None else self.labels[idx]
                record["accuracy"] = self._accuracy(out.z, out.a, labels)
            if self.t_val is not None:
                zv, av = model.predict(self.x_val)
                record["val_loss"] = self.loss(zv, av, self.t_val, probe=False).value + model.l2_penalty(cfg.loss.l2)
                if self.data.task == "classification":
                    record["val_accuracy"] = self._accuracy(zv, av, self.data.y_val)
        if fused:
            norms, origin = self._fused_update(flat, probe, sqs, record, layer_stats, origin)
        else:
            update_sqs = sqs
            factor = clip_by_global_norm(flat, clip).factor if clip is not None else 1.0
            if factor != 1.0:
                update_sqs = [sq * factor * factor for sq in sqs]
            # the update norms are free for SGD (lr * ||g||) and one pass over the update otherwise
            norms = self.optimizer.step(flat, want_norms=True, grad_sqs=update_sqs)
        update_origin = self._update_origin(norms)
        if origin is None:
            record["nonfinite"] = update_origin
        if layer_stats is not None:
            for i, st in enumerate(layer_stats):
                w_norm = st["W"]["norm"]
                st["update_ratio"] = norms[2 * i] / w_norm if w_norm else None
            record["layers"] = layer_stats
        return record

"""The trainer: one optimizer step of the config's MLP, and the step record the probes make of it."""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator, Optional

import numpy as np

from nnprobe.config import Config
from nnprobe.data import Dataset
from nnprobe.nn.activations import Activation, Identity, ReLU
from nnprobe.nn.losses import Loss
from nnprobe.nn.model import MLP, build_mlp, output_units
from nnprobe.nn.optim import clip_by_global_norm, make_optimizer
from nnprobe.probes import kernel, records
from nnprobe.probes import statistics as probes

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
        n = len(self.model.layers)
        layers = [records.LayerSpec(l.name, l.fan_in, l.units, l.activation_name, i == n - 1)
                  for i, l in enumerate(self.model.layers)]
        return records.start_record(
            name=cfg.name, seed=cfg.seed, task=d.task, dtype=cfg.model.dtype, layers=layers,
            x=d.x_train, y=d.y_train, n_val=int(d.x_val.shape[0]), n_classes=d.n_classes,
            loss={"kind": cfg.loss.kind, "reduction": cfg.loss.reduction, "from_logits": cfg.loss.from_logits,
                  "epsilon": cfg.loss.epsilon, "l2": cfg.loss.l2},
            optimizer={"kind": cfg.optimizer.kind, "lr": cfg.optimizer.lr,
                       "clip_grad_norm": cfg.optimizer.clip_grad_norm},
            probes_every=self.every, batch_size=self.batch_size, total_steps=self.total_steps)

    # -- probes

    def _probe_all(self, step: int, probe: probes.StepProbe) -> probes.StepProbe:
        """The rest of a planned step's statistics: the forward ones left for the end of the step, and W
        and b (not yet updated); the gradients' were taken as they were made (_observe_grads)."""
        opt = self.optimizer
        for i, layer in enumerate(self.model.layers):
            if probe.z[i] is None:
                self._forward_stats(probe, i, layer)
            # the weight distribution is what the init is judged by (step 0); later steps need only the norm,
            # which the last update may have measured already
            probe.params(i, layer.W, layer.b, distribution=step == 0, w_sq=opt.sqs_after[2 * i],
                         b_sums=(opt.sums_after[2 * i + 1], opt.sqs_after[2 * i + 1]))
        return probe

    def _params_for_record(self, i: int, layer) -> tuple:
        """A light step's W and b for the record builder: what the last update measured, else the arrays."""
        opt = self.optimizer
        w_sq, b_sum, b_sq = opt.sqs_after[2 * i], opt.sums_after[2 * i + 1], opt.sqs_after[2 * i + 1]
        W = {"norm": math.sqrt(w_sq), "nonfinite": 0} if w_sq is not None and w_sq < math.inf else layer.W
        b = layer.b
        if b_sq is not None and b_sq < math.inf and b.size:
            b = {"norm": math.sqrt(b_sq), "mean": b_sum / b.size}
        return W, b

    def _fused_update(self, flat: list[np.ndarray], probe: probes.StepProbe, sqs: list) -> list[float]:
        """SGD's update with each gradient's statistics taken in the same pass."""
        norms, passes = self.optimizer.step_measured(flat)
        for j, (g, got) in enumerate(zip(flat, passes)):
            stats, sqs[j] = probes.gradient_stats_from_pass(g, got, with_zero_frac=j % 2 == 0)
            (probe.gW if j % 2 == 0 else probe.gb)[j // 2] = stats
        return norms

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

    def _finite_after(self, j: int) -> bool:
        """Whether parameter j (params() order) is finite after the update: the update's measurement of it
        when it took one, else one dot product (and a scan only when that is not finite)."""
        sq = self.optimizer.sqs_after[j]
        if sq is not None and sq < math.inf:
            return True
        p = self.optimizer.params[j]
        return probes.sq_norm(p) < math.inf or probes.is_finite(p)

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
            lo = self.loss(out.z, out.a, tb)
            loss_value = lo.value + model.l2_penalty(cfg.loss.l2)
            flat = model.backward(lo.grad_z, cfg.loss.l2).flat()
            if clip is not None:
                clip_by_global_norm(flat, clip, math.sqrt(sum(probes.sq_norm(g) for g in flat)))
            self.optimizer.step(flat, want_norms=False)
            return records.loss_record(step, loss_value)

        last = self.total_steps - 1
        planned = step % self.every == 0 or step == last
        # a planned full step reads every tensor the step makes once, while it is still in the cache: z and
        # a in the forward pass (or not at all, where the fused ReLU pass measured them), each gradient (all
        # its statistics and its sum of squares) in the backward pass; any other step reads each gradient
        # once for its sum of squares (the global norm, the backward non-finite check). With plain SGD on
        # the C kernel the gradients are not read in the backward pass at all: the update reads each one
        # anyway and takes its statistics in the same pass (_fused_update)
        fused = planned and self._fusable and kernel.active is not None
        probe = probes.StepProbe(len(model.layers)) if planned else None
        sqs: list = [0.0] * (2 * len(model.layers))
        model.forward(xb, partial(self._observe_forward, probe) if planned else None)
        out = model.output
        lo = self.loss(out.z, out.a, tb)
        loss_value = lo.value + model.l2_penalty(cfg.loss.l2)
        observe = partial(self._observe_grads, probe, sqs) if planned and not fused else None
        flat = model.backward(lo.grad_z, cfg.loss.l2, observe).flat()
        if not planned:
            sqs = [probes.sq_norm(g) for g in flat]
        else:
            self._probe_all(step, probe)

        rec = records.StepRecordBuilder(step, full=planned, weight_distribution=step == 0)
        rec.input(True if self.input_finite else xb)
        for i, layer in enumerate(model.layers):
            if planned:
                rec.layer(layer.name, z=probe.z[i], a=probe.a[i], W=probe.W[i], b=probe.b[i])
            else:
                W, b = self._params_for_record(i, layer)
                rec.layer(layer.name, z=layer.z, a=layer.a, W=W, b=b, saturation=layer.activation.saturation,
                          a_from_z=self._stat_kinds[i])
        rec.loss(loss_value, None if lo.log_input is None
                 else records.LossInputs(lo.log_input, self.loss.epsilon, self.loss.two_sided))
        if not fused:
            grad_norm = math.sqrt(sum(sqs))
            for i, layer in enumerate(model.layers):
                rec.grads(layer.name, gW=probe.gW[i] if planned else flat[2 * i],
                          gb=probe.gb[i] if planned else flat[2 * i + 1])
            rec.grad_norm(grad_norm)
            rec.before_update()
        if rec.full:
            if self.labels is not None:
                labels = self.labels if idx is None else self.labels[idx]
                rec.accuracy(self._accuracy(out.z, out.a, labels))
            if self.t_val is not None:
                zv, av = model.predict(self.x_val)
                val_loss = self.loss(zv, av, self.t_val).value + model.l2_penalty(cfg.loss.l2)
                val_acc = self._accuracy(zv, av, self.data.y_val) if self.data.task == "classification" else None
                rec.validation(val_loss, val_acc)
        if fused:
            norms = self._fused_update(flat, probe, sqs)
            for i, layer in enumerate(model.layers):
                rec.grads(layer.name, gW=probe.gW[i], gb=probe.gb[i])
            rec.grad_norm(math.sqrt(sum(sqs)))
            rec.before_update()  # (after it: the update took the gradients' statistics)
        else:
            update_sqs = sqs
            if clip is not None and clip_by_global_norm(flat, clip, grad_norm):
                factor = clip / grad_norm
                update_sqs = [sq * factor * factor for sq in sqs]
            # the update norms are free for SGD (lr * ||g||) and one pass over the update otherwise
            norms = self.optimizer.step(flat, want_norms=True, grad_sqs=update_sqs)
        for i, layer in enumerate(model.layers):
            rec.update(layer.name, W_after=self._finite_after(2 * i), b_after=self._finite_after(2 * i + 1),
                       norm=norms[2 * i])
        return rec.record()

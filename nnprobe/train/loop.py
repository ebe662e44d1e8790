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
from nnprobe.probes import records
from nnprobe.probes import statistics as probes
from nnprobe.probes.plan import Planner, StepPlan
from nnprobe.rngs import run_seeds

class Trainer:
    """Holds the model, data and optimizer of one run and produces its step records."""

    def __init__(self, config: Config, data: Dataset, hidden_activation=None) -> None:
        self.config = config
        self.data = data
        seeds = run_seeds(config.seed)
        self.dtype = np.dtype(config.model.dtype)
        n_targets = data.y_train.shape[1] if data.task == "regression" else 1
        self.units = output_units(data.task, config.loss.kind, config.model.output, n_targets, data.n_classes)
        self.model: MLP = build_mlp(config.model, data.n_features, self.units, np.random.default_rng(seeds.init),
                                    hidden=hidden_activation)
        out_act = self.model.output.activation
        self.loss = Loss(config.loss.kind, reduction=config.loss.reduction, from_logits=config.loss.from_logits,
                         epsilon=config.loss.epsilon, output=out_act)
        self.optimizer = make_optimizer(self.model.params(), config.optimizer)
        self.shuffle_rng = np.random.default_rng(seeds.shuffle)
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
        # per layer, which passes the forward statistics may share (probes.forward_stats)
        self._stat_kinds = ["relu" if type(l.activation) is ReLU else "identity" if type(l.activation) is Identity
                            else "other" for l in self.model.layers]
        # only nnprobe's own activations are known to leave z and a alone in the backward pass (user code
        # may write into them), so only their statistics may wait until the end of the step
        may_defer = [type(l.activation).__module__ == Activation.__module__ for l in self.model.layers]
        z_bytes = [self.batch_size * l.units * self.dtype.itemsize for l in self.model.layers]
        self.planner = Planner(self.every, self.total_steps, z_bytes, may_defer)
        #: per parameter (params() order), what the last update's read of it found (None before the first)
        self._after: list[Optional[probes.ParamSums]] = [None] * len(self.optimizer.params)

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

    def _observe_forward(self, plan: StepPlan, probe: probes.StepProbe, i: int, layer) -> None:
        """A full step's pass over z (and a) as soon as the layer made them, where the plan says so."""
        if plan.eager[i]:
            self._forward_stats(probe, i, layer)

    def _forward_stats(self, probe: probes.StepProbe, i: int, layer) -> None:
        probe.forward(i, layer.z, layer.a, self._stat_kinds[i], layer.activation.saturation)

    def _observe_grads(self, probe: probes.StepProbe, sqs: list, i: int, gW: np.ndarray, gb: np.ndarray) -> None:
        """A full step's gradient statistics and squared norms, taken once each gradient exists."""
        probe.gW[i], sqs[2 * i] = probes.gradient_stats_with_sq(gW, with_zero_frac=True)
        probe.gb[i], sqs[2 * i + 1] = probes.gradient_stats_with_sq(gb, with_zero_frac=False)

    def _params_for_record(self, i: int, layer, plan: StepPlan) -> tuple:
        """W and b as the record builder takes them: the norms the last update's read found, when they are
        all the record needs and are finite; the arrays otherwise (the builder reads them when it must)."""
        W, b = layer.W, layer.b
        w_after, b_after = self._after[2 * i], self._after[2 * i + 1]
        if not plan.weight_distribution and w_after is not None and w_after.sumsq < math.inf:
            W = {"norm": math.sqrt(w_after.sumsq), "nonfinite": 0}
        if b_after is not None and b_after.total is not None and b_after.sumsq < math.inf and b.size:
            b = {"norm": math.sqrt(b_after.sumsq), "mean": b_after.total / b.size}
        return W, b

    def _finite_after(self, j: int) -> bool:
        """Whether parameter j is finite after the update: a finite sum of squares proves it; else a scan."""
        return self._after[j].sumsq < math.inf or probes.is_finite(self.optimizer.params[j])

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

        # a full step reads every tensor the step makes once: z and a (when the plan says), each gradient
        # (all its statistics and its sum of squares) as the backward pass makes it; any other step reads
        # each gradient once for its sum of squares (the global norm, the backward non-finite check)
        plan = self.planner.plan(step)
        full = plan.full
        probe = probes.StepProbe(len(model.layers)) if full else None
        sqs: list = [0.0] * (2 * len(model.layers))
        model.forward(xb, partial(self._observe_forward, plan, probe) if full else None)
        out = model.output
        lo = self.loss(out.z, out.a, tb)
        loss_value = lo.value + model.l2_penalty(cfg.loss.l2)
        flat = model.backward(lo.grad_z, cfg.loss.l2, partial(self._observe_grads, probe, sqs) if full else None).flat()
        if not full:
            sqs = [probes.sq_norm(g) for g in flat]
        grad_norm = math.sqrt(sum(sqs))

        rec = records.StepRecordBuilder(step, full=full, weight_distribution=plan.weight_distribution)
        rec.input(True if self.input_finite else xb)
        for i, layer in enumerate(model.layers):
            W, b = self._params_for_record(i, layer, plan)
            if full:
                if probe.z[i] is None:
                    self._forward_stats(probe, i, layer)
                rec.layer(layer.name, z=probe.z[i], a=probe.a[i], W=W, b=b)
            else:
                rec.layer(layer.name, z=layer.z, a=layer.a, W=W, b=b, saturation=layer.activation.saturation,
                          a_from_z=self._stat_kinds[i])
        rec.loss(loss_value, None if lo.log_input is None
                 else records.LossInputs(lo.log_input, self.loss.epsilon, self.loss.two_sided))
        for i, layer in enumerate(model.layers):
            rec.grads(layer.name, gW=probe.gW[i] if full else flat[2 * i], gb=probe.gb[i] if full else flat[2 * i + 1])
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

        update_sqs = sqs
        if clip is not None and clip_by_global_norm(flat, clip, grad_norm):
            factor = clip / grad_norm
            update_sqs = [sq * factor * factor for sq in sqs]
        # the update norms are free for SGD (lr * ||g||) and one pass over the update otherwise
        norms = self.optimizer.step(flat, want_norms=True, grad_sqs=update_sqs)
        self._after = [probes.parameter_sums(p) for p in self.optimizer.params]
        for i, layer in enumerate(model.layers):
            rec.update(layer.name, W_after=self._finite_after(2 * i), b_after=self._finite_after(2 * i + 1),
                       norm=norms[2 * i])
        return rec.record()

"""PyTorch as an independent oracle: the trainer computes what a hand-written PyTorch loop computes.

Each case trains one float64 config with nnprobe's Trainer and, from the same initial weights and on
the same batches, with PyTorch's autograd and torch.optim, and compares every step: the loss (with
the l2 term), the validation loss where there is one, and every parameter after the update, each to
1e-10 relative (a parameter by its norm: ||W - W_torch|| <= 1e-10 ||W_torch||).

Where nnprobe's convention differs from PyTorch's on purpose (README, "Conventions"), the reference
applies the documented conversion, never a looser tolerance: the clip divides by ||g|| (PyTorch's
clip_grad_norm_ by ||g|| + 1e-6), `gelu` is torch's GELU(approximate="tanh") and `gelu_erf` its default,
`softplus` has no linear branch (torch's threshold=inf), rmsprop's decay is optimizer.beta2 (torch's
alpha), and momentum is the classical v <- mu v - lr g (torch's buffer is -v / lr).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)  # tensors of a few hundred entries: more threads only add overhead

from nnprobe.config import validate_config  # noqa: E402
from nnprobe.data import load_dataset  # noqa: E402
from nnprobe.nn.activations import HIDDEN, OUTPUT  # noqa: E402
from nnprobe.nn.optim import OPTIMIZERS  # noqa: E402
from nnprobe.train.loop import Trainer  # noqa: E402

RTOL = 1e-10

TORCH_HIDDEN = {
    "identity": lambda z, m: z,
    "relu": lambda z, m: torch.relu(z),
    "leaky_relu": lambda z, m: F.leaky_relu(z, m.negative_slope),
    "sigmoid": lambda z, m: torch.sigmoid(z),
    "tanh": lambda z, m: torch.tanh(z),
    "elu": lambda z, m: F.elu(z),
    "gelu": lambda z, m: F.gelu(z, approximate="tanh"),
    "gelu_erf": lambda z, m: F.gelu(z),
    "softplus": lambda z, m: F.softplus(z, threshold=math.inf),
}

TORCH_OUTPUT = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=1),
    "relu": torch.relu,
    "tanh": torch.tanh,
}

TORCH_OPTIMIZERS = {
    "sgd": lambda ps, c: torch.optim.SGD(ps, lr=c.lr),
    "momentum": lambda ps, c: torch.optim.SGD(ps, lr=c.lr, momentum=c.momentum),
    "nesterov": lambda ps, c: torch.optim.SGD(ps, lr=c.lr, momentum=c.momentum, nesterov=True),
    "adam": lambda ps, c: torch.optim.Adam(ps, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps),
    "rmsprop": lambda ps, c: torch.optim.RMSprop(ps, lr=c.lr, alpha=c.beta2, eps=c.eps),
    "adagrad": lambda ps, c: torch.optim.Adagrad(ps, lr=c.lr, eps=c.eps),
}


def test_every_activation_and_optimizer_has_an_oracle():
    assert set(TORCH_HIDDEN) == set(HIDDEN)
    assert set(TORCH_OUTPUT) == set(OUTPUT)
    assert set(TORCH_OPTIMIZERS) == set(OPTIMIZERS)


# ---------------------------------------------------------------- the reference loop


def torch_loss(cfg, z, a, t, weights):
    """The loss exactly as nnprobe defines it (README, "Conventions"), written with torch ops."""
    loss, eps = cfg.loss, cfg.loss.epsilon
    if loss.kind == "mse":
        per = ((a - t) ** 2).sum()
    elif loss.from_logits and loss.kind == "bce":
        per = F.binary_cross_entropy_with_logits(z, t, reduction="sum")
    elif loss.from_logits:
        per = -(t * F.log_softmax(z, dim=1)).sum()
    elif loss.kind == "bce":
        per = -(t * torch.log(a + eps) + (1 - t) * torch.log(1 - a + eps)).sum()
    else:
        per = -(t * torch.log(a + eps)).sum()
    value = per / z.shape[0] if loss.reduction == "mean" else per
    if loss.l2:
        value = value + 0.5 * loss.l2 * sum((w * w).sum() for w in weights)
    return value


class TorchMLP:
    """The same MLP as plain tensors, z = x W + b (nnprobe's layout), starting from nnprobe's initial weights."""

    def __init__(self, trainer: Trainer) -> None:
        self.cfg = trainer.config
        self.params = [torch.tensor(p.copy(), requires_grad=True) for p in trainer.optimizer.params]
        hidden = [TORCH_HIDDEN[layer.activation_name] for layer in trainer.model.layers[:-1]]
        self.activations = [lambda z, f=f: f(z, self.cfg.model) for f in hidden]
        self.activations.append(TORCH_OUTPUT[trainer.model.layers[-1].activation_name])
        self.optimizer = TORCH_OPTIMIZERS[self.cfg.optimizer.kind](self.params, self.cfg.optimizer)

    def loss(self, x: np.ndarray, t: np.ndarray):
        a = torch.from_numpy(x)
        z = a
        for i, act in enumerate(self.activations):
            z = a @ self.params[2 * i] + self.params[2 * i + 1]
            a = act(z)
        return torch_loss(self.cfg, z, a, torch.from_numpy(t), self.params[0::2])

    def step(self, x: np.ndarray, t: np.ndarray) -> float:
        self.optimizer.zero_grad()
        loss = self.loss(x, t)
        loss.backward()
        clip = self.cfg.optimizer.clip_grad_norm
        if clip is not None:  # nnprobe's clip: max_norm / ||g||, where clip_grad_norm_ has ||g|| + 1e-6
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in self.params]))
            if norm > clip:
                for p in self.params:
                    p.grad.mul_(clip / norm)
        self.optimizer.step()
        return float(loss.detach())


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------- the matrix

BASE = {"seed": 3, "model": {"dtype": "float64", "init": "xavier_normal", "bias_init": "zeros"},
        "training": {"steps": 25}}
REGRESSION = {"source": "affine", "n_samples": 64, "low": 0, "high": 1, "integer": False, "slope": 0.5,
              "intercept": 0.2, "noise": 0.05}
BLOBS3 = {"source": "blobs", "n_samples": 90, "n_features": 4, "n_classes": 3}
MOONS = {"source": "moons", "n_samples": 80, "normalize": "standardize"}

CASES = {
    # every hidden activation (regression, mse, sgd)
    **{f"hidden-{act}": {"data": REGRESSION, "model": {"hidden": [8, 6], "activation": act, "output": "identity"},
                         "loss": {"kind": "mse"}, "optimizer": {"kind": "sgd", "lr": 0.05}}
       for act in sorted(HIDDEN)},
    "hidden-leaky_relu-slope-0.2": {"data": REGRESSION, "model": {"hidden": [8], "activation": "leaky_relu",
                                                                  "negative_slope": 0.2},
                                    "loss": {"kind": "mse"}, "optimizer": {"kind": "sgd", "lr": 0.05}},
    # every output activation with mse, mean and sum
    **{f"output-{out}-mse-{red}": {"data": REGRESSION, "model": {"hidden": [6], "activation": "tanh", "output": out},
                                   "loss": {"kind": "mse", "reduction": red},
                                   "optimizer": {"kind": "sgd", "lr": 0.004 if red == "sum" else 0.1}}
       for out in ("identity", "sigmoid", "relu", "tanh") for red in ("mean", "sum")},
    # the cross-entropy family: textbook (with and without epsilon) and from logits, mean and sum
    **{f"bce-{form}-{red}": {"data": MOONS, "model": {"hidden": [8], "activation": "tanh", "output": "sigmoid"},
                             "loss": {"kind": "bce", "reduction": red, **loss},
                             "optimizer": {"kind": "sgd", "lr": 0.005 if red == "sum" else 0.3}}
       for form, loss in (("textbook", {}), ("epsilon", {"epsilon": 1e-7}), ("logits", {"from_logits": True}))
       for red in ("mean", "sum")},
    **{f"ce-{form}-{red}": {"data": BLOBS3, "model": {"hidden": [10], "activation": "relu", "output": "softmax",
                                                      "init": "he_normal"},
                            "loss": {"kind": "cross_entropy", "reduction": red, **loss},
                            "optimizer": {"kind": "sgd", "lr": 0.002 if red == "sum" else 0.2}}
       for form, loss in (("textbook", {}), ("logits", {"from_logits": True})) for red in ("mean", "sum")},
    "bce-one-vs-rest-softmax": {"data": BLOBS3, "model": {"hidden": [6], "activation": "elu", "output": "softmax"},
                                "loss": {"kind": "bce"}, "optimizer": {"kind": "sgd", "lr": 0.2}},
    # every optimizer, on mini-batches, with l2 and clipping in the mix
    **{f"optimizer-{kind}": {"data": BLOBS3, "model": {"hidden": [12, 8], "activation": "tanh", "output": "softmax"},
                             "loss": {"kind": "cross_entropy", "from_logits": True},
                             "optimizer": {"kind": kind, "lr": 0.01 if kind in ("adam", "rmsprop", "adagrad") else 0.1},
                             "training": {"steps": 30, "batch_size": 32}}
       for kind in sorted(OPTIMIZERS)},
    **{f"l2-clip-{kind}": {"data": MOONS, "model": {"hidden": [10, 10], "activation": "gelu_erf", "output": "sigmoid"},
                           "loss": {"kind": "bce", "from_logits": True, "l2": 0.01},
                           "optimizer": {"kind": kind, "lr": 0.05, "clip_grad_norm": 0.1},
                           "training": {"steps": 30, "batch_size": 20}}
       for kind in ("sgd", "momentum", "adam")},
    "clip-regression-sum": {"data": REGRESSION, "model": {"hidden": [8], "activation": "softplus"},
                            "loss": {"kind": "mse", "reduction": "sum", "l2": 0.001},
                            "optimizer": {"kind": "nesterov", "lr": 0.002, "clip_grad_norm": 0.5},
                            "training": {"steps": 30, "batch_size": 16, "shuffle": False}},
    # the schedule of the probes and a validation split change nothing in the training
    "validation-every-4": {"data": {**BLOBS3, "validation_fraction": 0.25},
                           "model": {"hidden": [8], "activation": "leaky_relu", "output": "softmax"},
                           "loss": {"kind": "cross_entropy"}, "optimizer": {"kind": "adam", "lr": 0.01},
                           "training": {"epochs": 4, "batch_size": 17}, "probes": {"every": 4}},
    "probes-off": {"data": REGRESSION, "model": {"hidden": [8], "activation": "sigmoid"}, "loss": {"kind": "mse"},
                   "optimizer": {"kind": "rmsprop", "lr": 0.01}, "probes": {"enabled": False}},
    # per-layer models: a different init and activation per layer
    "per-layer": {"data": MOONS, "model": {"layers": [
        {"units": 9, "activation": "relu", "init": "he_truncated_normal"},
        {"units": 5, "activation": "gelu", "init": {"low": -0.3, "high": 0.3}, "bias_init": "xavier_uniform"},
        {"activation": "sigmoid", "init": "lecun_uniform"}]},
        "loss": {"kind": "bce", "from_logits": True}, "optimizer": {"kind": "adagrad", "lr": 0.05}},
}


def merged(case: dict) -> dict:
    raw = copy.deepcopy(BASE)
    for key, value in case.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    if "epochs" in raw["training"]:
        raw["training"].pop("steps")
    return raw


@pytest.mark.parametrize("case", sorted(CASES), ids=sorted(CASES))
def test_the_trainer_matches_pytorch_step_by_step(case):
    cfg = validate_config(merged(CASES[case]), source=case)
    data = load_dataset(cfg.data, cfg.task, np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(1)[0]))
    trainer = Trainer(cfg, data)
    reference = TorchMLP(trainer)
    batches = trainer.batches()
    for step in range(trainer.total_steps):
        idx = next(batches)
        x, t = (trainer.x, trainer.t) if idx is None else (trainer.x[idx], trainer.t[idx])
        with torch.no_grad():
            val = float(reference.loss(trainer.x_val, trainer.t_val)) if trainer.t_val is not None else None
        want = reference.step(x, t)
        record = trainer.step(step, idx)
        assert math.isfinite(want)
        assert relative(record["loss"], want) <= RTOL, (step, record["loss"], want)
        if "val_loss" in record:
            assert relative(record["val_loss"], val) <= RTOL, (step, record["val_loss"], val)
        for j, (p, q) in enumerate(zip(trainer.optimizer.params, reference.params)):
            q = q.detach().numpy()
            assert np.linalg.norm(p - q) <= RTOL * np.linalg.norm(q), (step, j)


@pytest.mark.parametrize("lr,nan_step", [(0.1, 358), (0.05, 921)], ids=["lr-0.1", "lr-0.05"])
def test_float32_textbook_bce_turns_nan_at_the_same_step_as_pytorch(lr, nan_step):
    """Seed case 2 in float32: a sigmoid output rounds to exactly 1 and log(1 - a) = log(0); both sides of
    that saturation must reproduce, so nnprobe and the PyTorch loop see the first non-finite loss together."""
    from pathlib import Path

    from nnprobe.config import load_config

    config = Path(__file__).resolve().parent.parent / "configs" / "nan-cost.yaml"
    cfg = load_config(config, [f"optimizer.lr={lr}", f"training.steps={nan_step + 5}"])
    data = load_dataset(cfg.data, cfg.task, np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(1)[0]))
    trainer = Trainer(cfg, data)
    reference = TorchMLP(trainer)
    with np.errstate(all="ignore"):
        for step in range(nan_step + 1):
            want = reference.step(trainer.x, trainer.t)
            record = trainer.step(step, None)
            if not math.isfinite(want) or record["nonfinite"] is not None:
                break
    assert step == nan_step
    assert not math.isfinite(want) and record["nonfinite"] == {"pass": "forward", "tensor": "loss", "layer": None}

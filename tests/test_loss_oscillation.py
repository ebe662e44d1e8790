"""loss-oscillation: at the scale of epochs the loss stops improving while it keeps swinging."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MLP_241, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.diagnose.detectors import explain
from nnprobe.train.run import train


def start(batch: int, n_train: int = 100) -> dict:
    s = start_record(MLP_241, total_steps=10, name="synthetic")
    s["data"] = {"n_train": n_train, "n_classes": None, "target_std": 1.0}
    s["batch_size"] = batch
    return s


def epochs(start, means, steps_per_epoch=10, jitter=0.0, seed=0):
    """Step losses whose epoch means are `means`, with +-jitter (relative) alternating inside each epoch."""
    out, step = [], 0
    for m in means:
        for k in range(steps_per_epoch):
            out.append(step_record(start, step, loss=m * (1 + (jitter if k % 2 else -jitter)), grad_norm=1.0,
                                   full=False))
            step += 1
    return out


def test_the_issue_case_batch_one_momentum_wanders_for_sixty_epochs(tmp_path):
    """SGD with momentum at batch size 1 on 100 examples: the loss wandered for 60 epochs without settling
    and no finding named it."""
    cfg = tmp_path / "wander.yaml"
    cfg.write_text(
        "data: {source: moons, n_samples: 100, noise: 0.2, normalize: standardize}\n"
        "model: {hidden: [50], activation: relu, output: softmax, init: he_normal, bias_init: zeros}\n"
        "loss: {kind: cross_entropy, from_logits: true}\n"
        "optimizer: {kind: momentum, lr: 0.1, momentum: 0.9}\n"
        "training: {epochs: 60, batch_size: 1}\n"
        "probes: {every: 10}\n")
    result = train(load_config(cfg), out_dir=tmp_path / "run", progress=None)
    (f,) = [f for f in result.findings if f.code == "loss-oscillation"]
    assert f.severity == "warning" and f.evidence["steps_per_epoch"] == 100
    assert f.evidence["improvement"] < 0.01 and f.evidence["swing"] >= 0.25 and f.evidence["variation"] >= 0.2
    assert "its best epoch mean did not improve" in f.message and "from one step to the next" in f.message
    assert f.fixes[0].startswith("optimizer.lr: 0.01") and f.fixes[1].startswith("training.batch_size: 32")


def flat_swinging(swing: float, n: int = 40) -> list[float]:
    """Epoch means alternating around 1 so that the mean change between epochs is `swing` of the level."""
    return [1 + swing / 2 * (1 if e % 2 else -1) for e in range(n)]


@pytest.mark.parametrize("swing, fires", [(0.24, False), (0.26, True)])
def test_swing_edge(swing, fires):
    s = start(batch=10)
    found, _ = run_one("loss-oscillation", epochs(s, flat_swinging(swing), jitter=0.5), s)
    assert bool(found) is fires


@pytest.mark.parametrize("jitter, fires", [(0.19, False), (0.21, True)])
def test_step_to_step_variation_edge(jitter, fires):
    """Alternating +-j/2 inside epochs of 100 steps moves the step loss by about j of the level per step."""
    s = start(batch=1)
    records = epochs(s, flat_swinging(0.4), steps_per_epoch=100, jitter=jitter / 2)
    found, _ = run_one("loss-oscillation", records, s)
    assert bool(found) is fires


def test_a_loss_still_falling_in_swings_is_not_oscillating():
    means = [m * 0.9 ** e for e, m in enumerate(flat_swinging(0.4))]
    s = start(batch=10)
    assert run_one("loss-oscillation", epochs(s, means, jitter=0.5), s)[0] == []


def test_noise_of_single_examples_with_flat_epoch_means_is_not_oscillation():
    """Batch size 1 at a noise floor: every step's loss differs wildly, the epoch means do not."""
    rng = np.random.default_rng(0)
    losses = rng.exponential(0.3, size=100 * 40)
    st = start(batch=1)
    records = [step_record(st, s, loss=float(x), grad_norm=1.0, full=False) for s, x in enumerate(losses)]
    assert run_one("loss-oscillation", records, st)[0] == []


def test_full_batch_epochs_are_grouped_into_periods_of_ten_steps():
    """One step per epoch: ten-step periods, so an Adam-like bounce of a few steps is not a wandering loss."""
    s = start(batch=100)
    found, _ = run_one("loss-oscillation", epochs(s, flat_swinging(0.5, n=60), steps_per_epoch=10, jitter=0.3), s)
    (f,) = found
    assert f.evidence["steps_per_epoch"] == 10


def test_patience_needs_five_consecutive_epochs():
    swinging = flat_swinging(0.5, n=14)  # windows end at epochs 9..13: five of them
    s = start(batch=10)
    assert run_one("loss-oscillation", epochs(s, swinging, jitter=0.5), s)[0]
    s = start(batch=10)
    assert run_one("loss-oscillation", epochs(s, swinging[:13], jitter=0.5), s)[0] == []


def test_explain_lists_the_fixes_the_issue_names():
    ex = explain("loss-oscillation").explanation
    assert any("lower optimizer.lr" in f for f in ex.fixes) and any("batch_size" in f for f in ex.fixes)
    assert any("decays" in f for f in ex.fixes)

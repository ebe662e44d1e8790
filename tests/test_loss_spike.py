"""loss-spike: a step loss many robust deviations (1.4826 x MAD) above the median of the 128 before it."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from conftest import MLP_241, plain_layer, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.train.run import train


def start(batch: int = 64) -> dict:
    s = start_record(MLP_241, total_steps=10, name="synthetic")
    s["data"] = {"n_train": 6400, "n_classes": None, "target_std": 1.0}
    s["batch_size"] = batch
    return s


def base_losses(n=200, level=1.0, spread=0.3, seed=0):
    return list(level + spread * np.random.default_rng(seed).standard_normal(n))


def with_spike(start, losses, at, value):
    losses = list(losses)
    losses[at] = value
    return [step_record(start, s, loss=float(x), grad_norm=1.0, full=False) for s, x in enumerate(losses)]


def robust(losses, at, window=128):
    before = losses[max(0, at - window):at]
    med = statistics.median(before)
    return med, 1.4826 * statistics.median(abs(x - med) for x in before)


@pytest.mark.parametrize("deviations, fires", [(5.9, False), (6.1, True)])
def test_deviation_edge(deviations, fires):
    losses = base_losses()
    med, dev = robust(losses, 150)
    s = start()
    found, _ = run_one("loss-spike", with_spike(s, losses, 150, med + deviations * dev), s, settings={"min_ratio": 0})
    assert bool(found) is fires


@pytest.mark.parametrize("ratio, fires", [(1.99, False), (2.01, True)])
def test_a_spike_is_also_a_multiple_of_the_median(ratio, fires):
    losses = base_losses(spread=0.05)  # 6 deviations are ~0.3: the ratio decides
    med, _ = robust(losses, 150)
    s = start()
    found, _ = run_one("loss-spike", with_spike(s, losses, 150, ratio * med), s)
    assert bool(found) is fires


def test_the_finding_quotes_step_size_median_and_what_moved_first():
    losses = base_losses(spread=0.05)
    med, dev = robust(losses, 150)
    st = start()
    records = with_spike(st, losses, 150, 5 * med)
    for s in range(120, 151):  # full records: dense1's weight-gradient norm jumps 10x at step 147
        records[s] = step_record(st, s, loss=records[s]["loss"], grad_norm=1.0, layers=[
            plain_layer("dense1", grad=1.0 if s >= 147 else 0.1), plain_layer("dense2", grad=0.1)])
    (f,), fired_at = run_one("loss-spike", records, st)
    assert fired_at == 150 and f.step == 150 and f.evidence["size"] == pytest.approx((5 * med - med) / dev)
    assert f"The loss jumped to {5 * med:.3g} at step 150" in f.message
    assert f"above the median {med:.3g} of the 128 losses before it" in f.message
    assert "the first layer statistic to jump before it was dense1's weight-gradient norm, 1 at step 147, 10x" \
        in f.message
    assert f.evidence["moved_first"]["layer"] == "dense1" and f.fixes[0].startswith("optimizer.lr:")


def test_spikes_are_counted_and_the_largest_named():
    losses = base_losses(spread=0.05)
    s = start()
    records = with_spike(s, with_spike_values(losses, {150: 4.0, 170: 9.0, 190: 3.0}), 150, 4.0)
    (f,), _ = run_one("loss-spike", records, s)
    assert f.evidence["spikes"] == 3 and f.evidence["largest_step"] == 170


def with_spike_values(losses, spikes):
    losses = list(losses)
    for at, value in spikes.items():
        losses[at] = value
    return losses


def test_no_judgement_before_min_history():
    s = start()
    found, _ = run_one("loss-spike", with_spike(s, base_losses(spread=0.05), 60, 5.0), s)
    assert found == []


def test_single_examples_are_judged_as_means_of_32_steps():
    """Batch size 1: one example's loss is heavy-tailed (a hard example costs 10x the median); the means
    of 32 steps are not, and a real jump of the model still shows in them."""
    rng = np.random.default_rng(1)
    losses = list(rng.exponential(0.2, size=128 * 32 + 200))
    st = start(batch=1)
    calm = [step_record(st, s, loss=float(x), grad_norm=1.0, full=False) for s, x in enumerate(losses)]
    assert max(losses) > 10 * statistics.median(losses)
    assert run_one("loss-spike", calm, st)[0] == []
    jumped = list(losses)
    for s in range(4200, 4232):
        jumped[s] = 3.0
    st = start(batch=1)
    (f,), _ = run_one("loss-spike", [step_record(st, s, loss=float(x), grad_norm=1.0, full=False)
                                     for s, x in enumerate(jumped)], st)
    assert f.evidence["steps_per_value"] == 32 and "(32 steps of 1 example)" in f.message


def test_a_nonfinite_loss_ends_the_watch():
    losses = base_losses(spread=0.05)
    s = start()
    records = with_spike(s, losses, 140, float("nan")) + []
    records[150]["loss"] = 10.0
    assert run_one("loss-spike", records, s)[0] == []


def test_a_real_run_with_units_dying_under_large_steps_spikes(tmp_path):
    cfg = tmp_path / "spiky.yaml"
    cfg.write_text(
        "data: {source: blobs, n_samples: 200, n_features: 2, n_classes: 3, normalize: standardize}\n"
        "model: {hidden: [32], activation: relu, output: softmax, init: he_normal, bias_init: zeros}\n"
        "loss: {kind: cross_entropy, from_logits: true}\n"
        "optimizer: {kind: sgd, lr: 3.0}\n"
        "training: {steps: 600, batch_size: 8}\n")
    result = train(load_config(cfg), out_dir=tmp_path / "run", progress=None)
    (f,) = [f for f in result.findings if f.code == "loss-spike"]
    assert f.evidence["steps_per_value"] == 4 and f.evidence["size"] > 6
    assert f.evidence["moved_first"] is not None


def test_a_log_that_does_not_give_its_batch_size_is_judged_step_by_step():
    s = start()
    s["batch_size"], s["data"] = None, {}
    losses = base_losses(spread=0.05)
    (f,), _ = run_one("loss-spike", with_spike(s, losses, 150, 5.0), s)
    assert f.step == 150 and f.evidence["steps_per_value"] == 1

"""log-zero says what values above 1 do to the loss (a ReLU output is never negative), and a
probability loss below 0, its lower bound, is flagged."""

from __future__ import annotations

import pytest

from conftest import MLP_241, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.train.run import train

RELU_OUT = [("dense1", 2, 16, "relu"), ("dense2", 16, 2, "relu")]


def relu_ce_start(kind="cross_entropy"):
    s = start_record(RELU_OUT, task="classification", total_steps=10, name="synthetic")
    s["data"] = {"n_train": 200, "n_classes": 2}
    s["loss"].update(kind=kind, epsilon=1e-7)
    return s


def loss_in(n_outside, lo=0.0, hi=3.0, n=400, n_zero=0):
    return {"n": n, "min": lo, "max": hi, "n_zero": n_zero, "n_one": 0, "n_outside": n_outside, "n_below_eps": n_zero}


def test_relu_outputs_above_one_are_not_called_negative():
    """Regression: a ReLU output fed to cross-entropy was told 'the log of a negative number is NaN', though
    a ReLU output is never negative; values above 1 make log(a) positive and the loss negative."""
    start = relu_ce_start()
    records = [step_record(start, s, loss=0.3 - 0.02 * s, grad_norm=1.0, layers=[], loss_in=loss_in(100))
               for s in range(30)]
    (f,), _ = run_one("log-zero", records, start)
    assert "negative number" not in f.message
    assert "100 values outside [0, 1] (min 0, max 3): above 1, log(a) > 0 makes the loss negative" in f.message


def test_bce_outputs_above_one_give_nan_through_log_one_minus_a():
    start = relu_ce_start("bce")
    records = [step_record(start, 0, loss=0.5, grad_norm=1.0, layers=[])]
    records[0]["loss_in"] = loss_in(5)
    (f,), _ = run_one("log-zero", records, start)
    assert "above 1, log(1 - a) is the log of a negative number, NaN" in f.message


def test_outputs_below_zero_are_the_log_of_a_negative_number():
    start = relu_ce_start()
    start["layers"][-1]["activation"] = "identity"
    records = [step_record(start, 0, loss=0.5, grad_norm=1.0, layers=[])]
    records[0]["loss_in"] = loss_in(5, lo=-0.5, hi=0.9)
    (f,), _ = run_one("log-zero", records, start)
    assert "below 0, the log of a negative number is NaN" in f.message and "above 1" not in f.message


def test_a_cross_entropy_below_zero_is_flagged_even_without_probability_statistics():
    """Regression: a run whose cross-entropy fell to -4.3 at chance accuracy had no finding saying so."""
    start = relu_ce_start()
    records = [step_record(start, s, loss=0.5 - 0.2 * s, grad_norm=1.0, layers=[], accuracy=0.5) for s in range(25)]
    (f,), fired_at = run_one("log-zero", records, start)
    assert fired_at == 3 and f.step == 3
    assert "The loss went below 0 at step 3 (-0.1), down to -4.3 at step 24, and the run ended at -4.3 with " \
           "accuracy 0.5" in f.message
    assert f.evidence["min_loss"] == pytest.approx(-4.3) and f.evidence["final_accuracy"] == 0.5


@pytest.mark.parametrize("loss, fires", [(-0.9e-6, False), (-1.1e-6, True)])
def test_below_zero_edge(loss, fires):
    start = relu_ce_start()
    found, _ = run_one("log-zero", [step_record(start, 0, loss=loss, grad_norm=1.0, layers=[])], start)
    assert bool(found) is fires


def test_mse_may_not_be_negative_either_but_has_no_probability_bound():
    start = start_record(MLP_241, total_steps=10, name="synthetic")
    assert run_one("log-zero", [step_record(start, 0, loss=-1.0, grad_norm=1.0, layers=[])], start)[0] == []


def test_a_relu_output_trained_into_a_negative_cross_entropy_is_named(tmp_path):
    cfg = tmp_path / "neg.yaml"
    cfg.write_text(
        "data: {source: blobs, n_samples: 200, n_features: 2, n_classes: 2, normalize: standardize}\n"
        "model: {hidden: [16], activation: relu, output: relu, init: uniform, bias_init: 1.0}\n"
        "loss: {kind: cross_entropy, from_logits: false, epsilon: 1.0e-7}\n"
        "optimizer: {kind: sgd, lr: 0.1}\n"
        "training: {steps: 300}\n")
    result = train(load_config(cfg), out_dir=tmp_path / "run", progress=None)
    (f,) = [f for f in result.findings if f.code == "log-zero"]
    assert result.final_loss < -1 and f.evidence["final_loss"] == pytest.approx(result.final_loss)
    assert "The loss went below 0 at step 0" in f.message and "negative number" not in f.message

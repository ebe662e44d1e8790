"""nnprobe.diagnose.detectors.numeric: nonfinite and log-zero over synthetic record streams.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import json

import pytest

from conftest import (
    INF, MLP_RELU, MLP_SIGMOID, NAN, exploding_to_nan, healthy_loss, healthy_stream, run_one, start_record, step_record,
)


# ---------------------------------------------------------------- nonfinite


def test_nonfinite_names_origin_and_the_numbers_before_it():
    start = start_record(loss={"reduction": "sum"}, data={"input_min": [0.0], "input_max": [99.0],
                                                         "input_mean": [49.0], "input_std": [29.0]})
    (f,), fired_at = run_one("nonfinite", exploding_to_nan(start), start)
    assert fired_at == 4 and f.step == 4 and f.layer == "dense2" and f.severity == "error"
    assert "+inf and -inf first appeared at step 4 in the forward pass: pre-activation of dense2" in f.message
    assert "last finite loss 1e+07 at step 3" in f.message
    assert "gradient norm 1e+11" in f.message
    assert "2 recorded step(s) with non-finite values, the last at step 5" in f.message
    assert f.evidence["pass"] == "forward" and f.evidence["tensor"] == "pre-activation"
    assert f.evidence["before"]["grad_norm"] == 1e11
    assert any(x.startswith("data.normalize: standardize") and "[0, 99]" in x for x in f.fixes)
    assert any(x.startswith("loss.reduction: mean") for x in f.fixes)
    assert any(x.startswith("optimizer.clip_grad_norm: 1.0") for x in f.fixes)
    json.dumps(f.to_dict(), allow_nan=False)


def test_nonfinite_quiet_on_a_finite_run():
    start = start_record()
    assert run_one("nonfinite", healthy_stream(start, 100), start)[0] == []


@pytest.mark.parametrize("grad_norm, exploded", [(999.0, False), (1001.0, True)])
def test_nonfinite_explode_norm_edge(grad_norm, exploded):
    start = start_record()
    recs = [step_record(start, 0, grad_norm=grad_norm),
            step_record(start, 1, loss=INF, nonfinite={"pass": "forward", "tensor": "loss", "layer": None})]
    (f,), _ = run_one("nonfinite", recs, start)
    assert f.evidence["exploded_before"] is exploded
    assert any(x.startswith("optimizer.clip_grad_norm") for x in f.fixes) is exploded


def test_nonfinite_float16_overflow_suggests_float32():
    start = start_record(dtype="float16")
    recs = [step_record(start, 0, layers={"dense1": {"z": {"max": 60000.0}}}),
            step_record(start, 1, nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense1"},
                        layers={"dense1": {"z": {"posinf": 4}}})]
    (f,), _ = run_one("nonfinite", recs, start)
    assert f.fixes[0].startswith("model.dtype: float32") and "65504" in f.fixes[0]
    assert "+inf first appeared" in f.message and "60000" in f.message


def test_nonfinite_in_the_loss_of_a_textbook_log_points_at_from_logits():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce"})
    li = {"n": 100, "min": 0.0, "max": 1.0, "n_zero": 0, "n_one": 3, "n_outside": 0, "n_below_eps": 0}
    recs = [step_record(start, 0), step_record(start, 1, loss=NAN, loss_in=li,
                                               nonfinite={"pass": "forward", "tensor": "loss", "layer": None})]
    (f,), _ = run_one("nonfinite", recs, start)
    assert f.layer is None and "NaN first appeared" in f.message and "3" in f.message
    assert f.fixes[0].startswith("loss.from_logits: true")


def test_nonfinite_in_the_update_pass():
    start = start_record()
    recs = [step_record(start, 0, grad_norm=5e300),
            step_record(start, 1, grad_norm=2e307, loss=3.0,
                        nonfinite={"pass": "update", "tensor": "weight", "layer": "dense1"})]
    (f,), _ = run_one("nonfinite", recs, start)
    assert "update pass: weight of dense1" in f.message and "still finite (3)" in f.message
    assert any(x.startswith("optimizer.lr: 0.001") for x in f.fixes)


def test_nonfinite_without_the_field_falls_back_on_the_loss():
    start = start_record()
    recs = [{"type": "step", "step": 0, "full": False, "loss": 1.0},
            {"type": "step", "step": 1, "full": False, "loss": NAN}]
    (f,), fired_at = run_one("nonfinite", recs, start)
    assert fired_at == 1 and f.evidence["tensor"] == "loss"


# ---------------------------------------------------------------- log-zero


def probs(n_zero=0, n_one=0, n_outside=0, n_below_eps=0, n=200, lo=0.0, hi=1.0) -> dict:
    return {"n": n, "min": lo, "max": hi, "n_zero": n_zero, "n_one": n_one, "n_outside": n_outside,
            "n_below_eps": n_below_eps}


def saturating_stream(start: dict, first_bad: int, n: int, **bad) -> list[dict]:
    recs = []
    for s in range(n):
        li = probs(**bad) if s >= first_bad else probs(lo=1e-6, hi=1 - 1e-6)
        recs.append(step_record(start, s, loss=healthy_loss(s) if s <= first_bad else NAN, loss_in=li,
                                full=s % 5 == 0))
    return recs


def test_log_zero_fires_where_the_probability_hits_one_before_nan():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce"})
    (f,), fired_at = run_one("log-zero", saturating_stream(start, 412, 420, n_one=37), start)
    assert fired_at == 412 and f.step == 412 and f.layer == "dense2"
    assert "probability 1.0 reached exactly 37 times (of 200 probabilities) at step 412" in f.message
    assert "loss.kind bce takes log(a) and log(1 - a)" in f.message
    assert "with epsilon 0 that is log(0) = -inf and 0*log(0) = NaN" in f.message
    assert "the loss became non-finite at step 413" in f.message
    assert "only postpones it" in f.message
    assert f.evidence["steps_with_events"] == 8 and f.evidence["last_step"] == 419
    assert f.fixes[0].startswith("loss.from_logits: true")


def test_log_zero_ignores_probability_one_for_cross_entropy():
    start = start_record(MLP_RELU, loss={"kind": "cross_entropy"})
    assert run_one("log-zero", saturating_stream(start, 5, 20, n_one=4), start)[0] == []
    (f,), _ = run_one("log-zero", saturating_stream(start, 5, 20, n_zero=4), start)
    assert "probability 0.0 reached exactly 4 times" in f.message and "takes log(a)" in f.message


def test_log_zero_outside_unit_interval_names_the_non_probability_output():
    start = start_record([("dense1", 2, 8, "relu"), ("dense2", 8, 1, "relu")], loss={"kind": "bce"})
    recs = [step_record(start, 0, loss=NAN, loss_in=probs(n_zero=150, n_outside=20, hi=2.5))]
    (f,), _ = run_one("log-zero", recs, start)
    assert "20 values outside [0, 1] (min 0, max 2.5)" in f.message and "relu output" in f.message
    assert "model.output: sigmoid" in f.fixes[1]


def test_log_zero_counts_below_epsilon_only_with_epsilon():
    start = start_record(MLP_RELU, loss={"kind": "bce", "epsilon": 1e-8})
    (f,), _ = run_one("log-zero", saturating_stream(start, 3, 10, n_below_eps=7), start)
    assert "7 came within epsilon 1e-08 of 0 or 1" in f.message and "huge but finite loss" in f.message
    start0 = start_record(MLP_RELU, loss={"kind": "bce", "epsilon": 0.0})
    assert run_one("log-zero", saturating_stream(start0, 3, 10, n_below_eps=7), start0)[0] == []


def test_log_zero_quiet_from_logits_and_on_healthy_probabilities():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce"})
    assert run_one("log-zero", [step_record(start, s, loss_in=probs(lo=0.01, hi=0.99)) for s in range(50)],
                   start)[0] == []
    start_fl = start_record(MLP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    assert run_one("log-zero", healthy_stream(start_fl, 50), start_fl)[0] == []


@pytest.mark.parametrize("count, fires", [(4, False), (5, True)])
def test_log_zero_min_count_edge(count, fires):
    start = start_record(MLP_SIGMOID, loss={"kind": "bce"})
    found, _ = run_one("log-zero", [step_record(start, 0, loss_in=probs(n_one=count))], start,
                       settings={"min_count": 5})
    assert bool(found) is fires

"""nnprobe.diagnose.detectors.gradients: exploding-gradients and vanishing-gradients.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import math
from typing import Optional

import pytest

from conftest import (
    MLP_RELU, run_one, start_record, step_record,
)


# ---------------------------------------------------------------- exploding-gradients


def test_exploding_gradients_absolute_norm():
    start = start_record()
    recs = [step_record(start, s, grad_norm=g) for s, g in enumerate([0.5, 0.7, 8e4, 3e6, 0.9, 2e5])]
    (f,), fired_at = run_one("exploding-gradients", recs, start)
    assert fired_at == 2 and f.step == 2 and f.layer is None
    assert "exceeded 1000 at 3 steps from step 2 to step 5, peaking at 3e+06 at step 3" in f.message
    assert f.evidence["above_steps"] == 3


@pytest.mark.parametrize("norm, fires", [(999.0, False), (1001.0, True)])
def test_exploding_gradients_max_norm_edge(norm, fires):
    start = start_record()
    found, _ = run_one("exploding-gradients", [step_record(start, 0, grad_norm=norm)], start)
    assert bool(found) is fires


def growth_stream(start: dict, factor: float, steps: int, base: float = 1.0) -> list[dict]:
    recs = [step_record(start, 0, grad_norm=base), step_record(start, 1, grad_norm=base)]
    for k in range(steps):
        recs.append(step_record(start, 2 + k, grad_norm=base * factor ** (k + 1)))
    return recs


def test_exploding_gradients_geometric_growth():
    start = start_record()
    (f,), fired_at = run_one("exploding-gradients", growth_stream(start, 3.0, 6), start)
    assert fired_at == 5 and f.step == 1
    assert "grew at least 2x per step for 6 consecutive steps, from 1 at step 1 to 729 at step 7" in f.message


@pytest.mark.parametrize("factor, fires", [(1.99, False), (2.0, True)])
def test_exploding_gradients_growth_edge(factor, fires):
    start = start_record()
    found, _ = run_one("exploding-gradients", growth_stream(start, factor, 4, base=5.0), start)
    assert bool(found) is fires


@pytest.mark.parametrize("steps, fires", [(3, False), (4, True)])
def test_exploding_gradients_growth_steps_edge(steps, fires):
    start = start_record()
    found, _ = run_one("exploding-gradients", growth_stream(start, 3.0, steps, base=1.0), start)
    assert bool(found) is fires


@pytest.mark.parametrize("base, fires", [(10 / 81 * 0.99, False), (10 / 81 * 1.01, True)])
def test_exploding_gradients_growth_min_norm_edge(base, fires):
    start = start_record()
    found, _ = run_one("exploding-gradients", growth_stream(start, 3.0, 4, base=base), start)
    assert bool(found) is fires


def ratio_stream(start: dict, ratio: float, n: int, last_norm: float = 0.01) -> list[dict]:
    last = start["layers"][-1]["name"]
    over = {"dense1": {"gW": {"norm": ratio * last_norm}}, last: {"gW": {"norm": last_norm}}}
    return [step_record(start, s, layers=over) for s in range(n)]


def test_exploding_gradients_first_last_ratio():
    start = start_record(MLP_RELU)
    (f,), fired_at = run_one("exploding-gradients", ratio_stream(start, 120.0, 10), start)
    assert fired_at == 2 and f.step == 0
    assert "dense1/dense3 gradient-norm ratio stayed above 70 from step 0 to the end" in f.message
    assert "up to 120" in f.message


@pytest.mark.parametrize("ratio, fires", [(69.9, False), (70.1, True)])
def test_exploding_gradients_max_ratio_edge(ratio, fires):
    start = start_record(MLP_RELU)
    assert bool(run_one("exploding-gradients", ratio_stream(start, ratio, 5), start)[0]) is fires


@pytest.mark.parametrize("n, fires", [(2, False), (3, True)])
def test_exploding_gradients_ratio_patience_edge(n, fires):
    start = start_record(MLP_RELU)
    assert bool(run_one("exploding-gradients", ratio_stream(start, 100.0, n), start)[0]) is fires


def test_exploding_gradients_quiet_on_noisy_healthy_norms():
    start = start_record()
    recs = [step_record(start, s, grad_norm=0.5 * (1.9 if s % 2 else 1.0)) for s in range(200)]
    assert run_one("exploding-gradients", recs, start)[0] == []


# ---------------------------------------------------------------- vanishing-gradients


def vanishing_stream(start: dict, first_norm: float, n: int, last_norm: float = 0.5, loss=lambda s: 0.7,
                     layer_over: Optional[dict] = None) -> list[dict]:
    last = start["layers"][-1]["name"]
    over = layer_over or {"dense1": {"gW": {"norm": first_norm}}, last: {"gW": {"norm": last_norm}}}
    return [step_record(start, s, loss=loss(s), layers=over) for s in range(n)]


DEEP_SIGMOID = [("dense1", 2, 16, "sigmoid")] + [(f"dense{i}", 16, 16, "sigmoid") for i in range(2, 6)] + \
    [("dense6", 16, 1, "sigmoid")]


def test_vanishing_gradients_by_ratio_in_a_deep_sigmoid_net():
    start = start_record(DEEP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    (f,), fired_at = run_one("vanishing-gradients", vanishing_stream(start, 2e-5, 40), start)
    assert fired_at == 4 and f.step == 0 and f.layer == "dense1"
    assert "its gradient norm is 4e-05 of the output layer's (< 0.001)" in f.message
    assert "from step 0 to the end (40 steps, all 40 full records)" in f.message
    assert f.fixes[0].startswith("model.activation: relu")


@pytest.mark.parametrize("first_norm, fires", [(0.5e-3 * 1.01, False), (0.5e-3 * 0.99, True)])
def test_vanishing_gradients_ratio_edge(first_norm, fires):
    start = start_record(DEEP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    settings = {"first_norm": 1.0}  # isolate the ratio rule
    assert bool(run_one("vanishing-gradients", vanishing_stream(start, first_norm, 10), start,
                        settings=settings)[0]) is fires


@pytest.mark.parametrize("first_norm, fires", [(1.01e-4, False), (0.99e-4, True)])
def test_vanishing_gradients_first_norm_edge(first_norm, fires):
    start = start_record(DEEP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    recs = vanishing_stream(start, first_norm, 10, last_norm=10.0)  # ratio 1e-5: only first_norm decides
    assert bool(run_one("vanishing-gradients", recs, start)[0]) is fires


@pytest.mark.parametrize("rms, fires", [(1.01e-7, False), (0.99e-7, True)])
def test_vanishing_gradients_min_rms_edge(rms, fires):
    start = start_record()
    over = {"dense2": {"gW": {"norm": rms * math.sqrt(3)}}}
    found, _ = run_one("vanishing-gradients", vanishing_stream(start, 0, 10, layer_over=over), start)
    assert bool(found) is fires
    if fires:
        assert found[0].layer == "dense2" and "RMS weight gradient" in found[0].message


def test_vanishing_gradients_leaves_exactly_zero_gradients_to_dead_relu():
    start = start_record()
    over = {"dense1": {"gW": {"norm": 0.0}}, "dense2": {"gW": {"norm": 0.0}}}
    assert run_one("vanishing-gradients", vanishing_stream(start, 0, 20, layer_over=over), start)[0] == []


@pytest.mark.parametrize("n, fires", [(4, False), (5, True)])
def test_vanishing_gradients_patience_edge(n, fires):
    start = start_record(DEEP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    assert bool(run_one("vanishing-gradients", vanishing_stream(start, 1e-6, n), start)[0]) is fires


@pytest.mark.parametrize("final, fires", [(1.01e-3, True), (0.99e-3, False)])
def test_vanishing_gradients_not_when_converged(final, fires):
    start = start_record()
    over = {"dense2": {"gW": {"norm": 1e-9}}}
    recs = vanishing_stream(start, 0, 10, layer_over=over, loss=lambda s: 1.0 if s == 0 else final)
    assert bool(run_one("vanishing-gradients", recs, start)[0]) is fires


def test_vanishing_gradients_blip_does_not_count():
    start = start_record(DEEP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    recs = []
    for s in range(100):
        norm = 1e-6 if s % 4 == 0 else 0.1
        recs += vanishing_stream(start, norm, 1)
        recs[-1]["step"] = s
    assert run_one("vanishing-gradients", recs, start)[0] == []

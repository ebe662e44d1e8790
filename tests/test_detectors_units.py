"""nnprobe.diagnose.detectors.units: dead-relu and saturated-activations.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import pytest

from conftest import (
    MLP_RELU, MLP_SIGMOID, dead_stream, healthy_loss, make_config, run_one, start_record, step_record,
)


# ---------------------------------------------------------------- dead-relu


def test_dead_relu_message_quotes_units_examples_and_duration():
    start = start_record(total_steps=1000)
    recs = [step_record(start, s, loss=healthy_loss(s), layers={"dense1": {"a": {"dead": 2 if s >= 12 else 0}}})
            for s in range(1000)]
    (f,), fired_at = run_one("dead-relu", recs, start, config=make_config(model={"activation": "leaky_relu"}))
    assert fired_at == 21 and f.step == 12 and f.layer == "dense1"
    assert ("2 of 3 units of dense1 output 0 for all 100 examples from step 12 to the end "
            "(988 steps, all 988 full records)") in f.message
    assert f.evidence["to_end"] is True and f.evidence["records"] == 988
    assert any(x.startswith("optimizer.lr: 0.001") for x in f.fixes)


def test_dead_relu_watches_only_relu_layers():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce"})
    recs = [step_record(start, s, layers={"dense1": {"a": {"dead": 16}}}) for s in range(30)]
    assert run_one("dead-relu", recs, start)[0] == []


@pytest.mark.parametrize("dead, fires", [(7, False), (8, True)])
def test_dead_relu_fraction_edge(dead, fires):
    start = start_record(MLP_RELU)
    found, _ = run_one("dead-relu", dead_stream(start, 20, dead=dead, layer="dense2"), start)
    assert bool(found) is fires
    if fires:
        assert found[0].layer == "dense2" and "8 of 16 units" in found[0].message


@pytest.mark.parametrize("n, fires", [(9, False), (10, True)])
def test_dead_relu_patience_edge(n, fires):
    start = start_record()
    assert bool(run_one("dead-relu", dead_stream(start, n), start)[0]) is fires


def test_dead_relu_on_plain_relu_reports_zero_gradients_and_suggests_leaky():
    start = start_record(MLP_RELU)
    recs = [step_record(start, s, layers={"dense1": {"a": {"dead": 12}, "gW": {"zero_frac": 0.75}}})
            for s in range(15)]
    (f,), _ = run_one("dead-relu", recs, start, config=make_config(model={"activation": "relu"}))
    assert "75% of its weight gradient is exactly 0" in f.message
    assert any(x.startswith("model.activation: leaky_relu") for x in f.fixes)


# ---------------------------------------------------------------- saturated-activations


def saturated_stream(start: dict, frac: float, n: int, layer="dense1", z=(-40.0, 31.0)) -> list[dict]:
    return [step_record(start, s, layers={layer: {"z": {"sat_frac": frac, "min": z[0], "max": z[1]}}})
            for s in range(n)]


def test_saturated_activations_in_a_sigmoid_hidden_layer():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    (f,), fired_at = run_one("saturated-activations", saturated_stream(start, 0.8, 30), start)
    assert fired_at == 9 and f.step == 0 and f.layer == "dense1"
    assert "80% of dense1's sigmoid inputs have |z| > 5.99" in f.message
    assert "z reached -40, beyond -23" in f.message and "z reached 31, beyond 17" in f.message


def test_saturated_output_of_a_cross_entropy_model_is_not_watched():
    start = start_record(MLP_SIGMOID, loss={"kind": "bce", "from_logits": True})
    assert run_one("saturated-activations", saturated_stream(start, 0.9, 30, layer="dense2"), start)[0] == []
    start_mse = start_record(MLP_SIGMOID)
    assert len(run_one("saturated-activations", saturated_stream(start_mse, 0.9, 30, layer="dense2"),
                       start_mse)[0]) == 1


@pytest.mark.parametrize("frac, fires", [(0.49, False), (0.5, True)])
def test_saturated_fraction_edge(frac, fires):
    start = start_record(MLP_SIGMOID)
    assert bool(run_one("saturated-activations", saturated_stream(start, frac, 20), start)[0]) is fires


@pytest.mark.parametrize("n, fires", [(9, False), (10, True)])
def test_saturated_patience_edge(n, fires):
    start = start_record(MLP_SIGMOID)
    assert bool(run_one("saturated-activations", saturated_stream(start, 0.9, n), start)[0]) is fires


@pytest.mark.parametrize("z, named", [((-22.9, 16.9), False), ((-23.1, 16.9), True), ((-5.0, 17.1), True)])
def test_saturated_sigmoid_band_edges(z, named):
    start = start_record(MLP_SIGMOID)
    (f,), _ = run_one("saturated-activations", saturated_stream(start, 0.9, 12, z=z), start)
    assert ("band" in f.message) is named


@pytest.mark.parametrize("zmax, named", [(9.4, False), (9.6, True)])
def test_saturated_tanh_band_edge(zmax, named):
    start = start_record([("dense1", 2, 16, "tanh"), ("dense2", 16, 1, "identity")])
    (f,), _ = run_one("saturated-activations", saturated_stream(start, 0.9, 12, z=(-1.0, zmax)), start)
    assert ("band" in f.message) is named and "|z| > 2.99" in f.message

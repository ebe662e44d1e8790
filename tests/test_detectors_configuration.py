"""nnprobe.diagnose.detectors.configuration: unnormalized-inputs and poor-init.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import math
from typing import Optional

import pytest

from nnprobe.diagnose.detectors import REGISTRY, RunContext
from nnprobe.findings import Finding

from conftest import (
    MLP_RELU, make_config, rule_std, run_one, start_record, step_record,
)


# ---------------------------------------------------------------- unnormalized-inputs


def static_of(code: str, start: dict, settings: Optional[dict] = None) -> list[Finding]:
    return REGISTRY[code](RunContext(start=start, config=make_config()), settings).static()


def test_unnormalized_inputs_and_targets_of_the_forum_regression():
    start = start_record(data={"input_mean": [49.1], "input_std": [28.7], "input_min": [0.0], "input_max": [99.0],
                               "target_mean": 50.1, "target_std": 28.7, "target_min": 1.0, "target_max": 100.0})
    (f,) = static_of("unnormalized-inputs", start)
    assert f.step is None and f.layer is None and f.severity == "warning"
    assert "feature 0 spans [0, 99] (mean 49.1, std 28.7" in f.message
    assert "regression targets span [1, 100]" in f.message
    assert f.fixes == ["data.normalize: standardize  — inputs span [0, 99]",
                       "data.normalize_target: standardize  — targets span [1, 100]"]


def test_unnormalized_inputs_quiet_on_standardized_and_minmax_data():
    for data in ({}, {"input_mean": [0.5, 0.5], "input_std": [0.29, 0.3], "input_min": [0, 0], "input_max": [1, 1]}):
        start = start_record([("dense1", 2, 8, "relu"), ("dense2", 8, 1, "identity")], data=data)
        assert static_of("unnormalized-inputs", start) == []


def one_feature(mean: float, std: float) -> dict:
    return start_record(data={"input_mean": [mean], "input_std": [std], "input_min": [mean - 2 * std],
                              "input_max": [mean + 2 * std]})


@pytest.mark.parametrize("std, fires", [(9.99, False), (10.01, True)])
def test_unnormalized_max_scale_edge(std, fires):
    assert bool(static_of("unnormalized-inputs", one_feature(0.0, std))) is fires


@pytest.mark.parametrize("mean, fires", [(2.99, False), (3.01, True)])
def test_unnormalized_max_offset_edge(mean, fires):
    assert bool(static_of("unnormalized-inputs", one_feature(mean, 1.0))) is fires


@pytest.mark.parametrize("std, fires", [(0.0101, False), (0.0099, True)])
def test_unnormalized_min_std_edge(std, fires):
    assert bool(static_of("unnormalized-inputs", one_feature(0.0, std))) is fires


def test_unnormalized_constant_feature_is_named():
    (f,) = static_of("unnormalized-inputs", one_feature(0.0, 0.0))
    assert "(constant)" in f.message and any("drop feature(s) 0" in x for x in f.fixes)


def test_unnormalized_threshold_override():
    assert static_of("unnormalized-inputs", one_feature(0.0, 20.0), {"max_scale": 50}) == []


# ---------------------------------------------------------------- poor-init


def init_record(start: dict, layers: dict[str, dict]) -> list[dict]:
    return [step_record(start, 0, layers=layers), step_record(start, 1)]


def test_poor_init_all_positive_uniform_weights_of_the_forum_net():
    start = start_record()
    layers = {"dense1": {"W": {"norm": 0.95, "mean": 0.51, "std": 0.19, "pos_frac": 1.0}, "b": {"mean": 0.67}},
              "dense2": {"W": {"norm": 0.98, "mean": 0.56, "std": 0.1, "pos_frac": 1.0}}}
    found, fired_at = run_one("poor-init", init_record(start, layers), start,
                              config=make_config(model={"init": "uniform", "activation": "leaky_relu"}))
    assert fired_at == 0 and [f.layer for f in found] == ["dense1", "dense2"] and all(f.step == 0 for f in found)
    assert "all 3 weights are positive (mean 0.51, std 0.19), as are all 6 weights of dense1, dense2" in \
        found[0].message
    assert found[0].fixes[0].startswith("model.init: he_normal")
    assert any(x.startswith("model.bias_init: zeros") for x in found[0].fixes)


@pytest.mark.parametrize("std, fires", [(0.3, False), (5.0, True), (0.01, True)])
def test_poor_init_judges_a_user_activation_against_every_standard_rule(std, fires):
    """Regression: a layer whose activation had no init rule (user code) was skipped by poor-init without a word.
    It is now judged against the band of the standard rules: 2 -> 16 gives Xavier 0.33 .. He 1.0, widened 3x."""
    start = start_record([("dense1", 2, 16, "acts:swish"), ("dense2", 16, 1, "identity")])
    layers = {"dense1": {"W": {"norm": std * math.sqrt(32), "std": std}}}
    found, _ = run_one("poor-init", init_record(start, layers), start)
    assert bool(found) is fires
    if fires:
        assert found[0].layer == "dense1" and "nearest standard fan-in rule" in found[0].message
        assert "acts:swish" in found[0].message


@pytest.mark.parametrize("count, fires", [(5, False), (6, True)])
def test_poor_init_min_weights_edge_for_one_sign(count, fires):
    start = start_record([("dense1", 1, count, "relu"), ("dense2", count, 1, "identity")])
    layers = {"dense1": {"W": {"mean": 0.5, "pos_frac": 1.0}}}
    assert bool(run_one("poor-init", init_record(start, layers), start)[0]) is fires


def scaled_init(start: dict, layer: str, ratio: float) -> list[dict]:
    spec = next(s for s in start["layers"] if s["name"] == layer)
    count = spec["fan_in"] * spec["units"]
    std = rule_std(spec["fan_in"], spec["units"], spec["activation"])
    return init_record(start, {layer: {"W": {"norm": ratio * std * math.sqrt(count), "std": ratio * std}}})


# dense2 of MLP_RELU (16 -> 16): He 0.354 is the largest standard rule, LeCun = Xavier = 0.25 the smallest.
@pytest.mark.parametrize("ratio, fires", [(2.99, False), (3.01, True), (0.25 / 0.354 / 2.99, False),
                                          (0.25 / 0.354 / 3.01, True)])
def test_poor_init_scale_ratio_edge(ratio, fires):
    start = start_record(MLP_RELU)
    found, _ = run_one("poor-init", scaled_init(start, "dense2", ratio), start)
    assert bool(found) is fires
    if fires:
        assert found[0].layer == "dense2" and "He sqrt(2/fan_in) = 0.354 rule for relu" in found[0].message


def test_poor_init_normal_weights_on_a_wide_layer():
    start = start_record([("dense1", 784, 256, "relu"), ("dense2", 256, 10, "softmax")],
                         loss={"kind": "cross_entropy"})
    (f,), _ = run_one("poor-init", scaled_init(start, "dense1", 1 / math.sqrt(2 / 784)), start,
                      config=make_config(model={"init": "normal", "activation": "relu"}))
    assert "19.8x the He sqrt(2/fan_in)" in f.message


def test_poor_init_accepts_any_standard_fan_in_rule():
    """Xavier on a relu layer with fan_in 1, fan_out 16 is 0.3x He, but still a standard rule."""
    start = start_record([("dense1", 1, 16, "relu"), ("dense2", 16, 1, "identity")])
    xavier = math.sqrt(2 / 17)
    recs = init_record(start, {"dense1": {"W": {"norm": xavier * 4, "std": xavier}}})
    assert run_one("poor-init", recs, start)[0] == []


def test_poor_init_zero_weights():
    start = start_record(MLP_RELU)
    (f,), _ = run_one("poor-init", init_record(start, {"dense2": {"W": {"norm": 0.0, "std": 0.0}}}), start)
    assert "all 256 weights are 0" in f.message


def test_poor_init_quiet_on_fan_in_init_and_checks_only_the_first_full_record():
    start = start_record(MLP_RELU)
    later_bad = [step_record(start, 0), step_record(start, 1, layers={"dense1": {"W": {"pos_frac": 1.0}}})]
    assert run_one("poor-init", later_bad, start)[0] == []

"""The detector registry and the suite: every code registered with its contract, overrides, ignore, stop_on.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import json

import pytest

from nnprobe.diagnose.detectors import REGISTRY, all_codes, explain
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold

from conftest import (
    INF, MLP_131, MLP_RELU, MLP_SIGMOID, NAN, codes, dead_stream, healthy_loss, healthy_stream, make_config,
    only, run_one, run_suite, start_record, step_record,
)


# ---------------------------------------------------------------- the registry and the contract


def test_every_spec_code_is_registered_in_report_order():
    """SPEC.md's codes, in this order among all registered ones (a new detector needs no edit here)."""
    spec_order = [
        "nonfinite", "log-zero", "output-loss-mismatch", "exploding-gradients", "vanishing-gradients",
        "dead-relu", "saturated-activations", "unnormalized-inputs", "poor-init", "large-update-ratio",
        "loss-divergence", "loss-plateau", "gradient-mismatch",
    ]
    assert [c for c in all_codes() if c in spec_order] == spec_order


SPEC_SEVERITY = {
    "nonfinite": "error", "log-zero": "error", "output-loss-mismatch": "error", "exploding-gradients": "warning",
    "vanishing-gradients": "warning", "dead-relu": "warning", "saturated-activations": "warning",
    "unnormalized-inputs": "warning", "poor-init": "warning", "large-update-ratio": "warning",
    "loss-divergence": "warning", "loss-plateau": "info", "gradient-mismatch": "error",
}


@pytest.mark.parametrize("code", sorted(SPEC_SEVERITY), ids=str)
def test_detector_declares_its_contract(code):
    cls = explain(code)
    assert issubclass(cls, Detector)
    assert cls.severity == SPEC_SEVERITY[code]
    assert cls.summary and "\n" not in cls.summary
    assert isinstance(cls.explanation, Explanation)
    assert cls.explanation.meaning and cls.explanation.causes and cls.explanation.fixes
    assert cls.explanation.references
    for name, th in cls.thresholds.items():
        assert isinstance(th, Threshold) and isinstance(th.default, (int, float)) and len(th.doc) > 20, name


def test_dead_relu_threshold_is_called_fraction():
    assert REGISTRY["dead-relu"].thresholds["fraction"].default == 0.5


@pytest.mark.parametrize("code", sorted(SPEC_SEVERITY), ids=str)
def test_detector_survives_garbage_records(code):
    """None stats, NaN/inf floats, missing optional fields, an abrupt end: no exception, JSON-safe output."""
    start = start_record(MLP_RELU, loss={"kind": "cross_entropy", "epsilon": 1e-8})
    broken_layer = {"z": None, "a": {"dead": None}, "gW": {"norm": NAN, "zero_frac": None}, "W": {},
                    "update_ratio": INF}
    records = [
        step_record(start, 0),
        step_record(start, 1, loss=NAN, grad_norm=INF, layers={"dense1": broken_layer}),
        {"type": "step", "step": 2, "full": True, "loss": INF, "grad_norm": None, "layers": None},
        {"type": "step", "step": 3, "full": False, "loss": None},
        {"type": "step", "step": 4, "full": True, "loss": 1.0, "grad_norm": 1.0,
         "layers": [{"name": "dense1"}, {"name": "dense2", "gW": None}, {"name": "dense3", "W": None}],
         "loss_in": {"n": 10, "min": NAN, "max": None, "n_zero": None}},
    ]
    findings, _ = run_one(code, records, start, end=None)
    for f in findings:
        json.dumps(f.to_dict(), allow_nan=False)


# ---------------------------------------------------------------- suite: overrides, ignore, stop_on


def test_threshold_override_takes_effect_through_the_suite():
    start = start_record()
    records = dead_stream(start, 30, dead=1)  # 1 of 3 = 0.33 < default 0.5
    assert only(run_suite(records, start)[0], "dead-relu") == []
    config = make_config(detectors={"dead-relu": {"fraction": 0.3}})
    assert len(only(run_suite(records, start, config)[0], "dead-relu")) == 1


def test_severity_override_takes_effect_through_the_suite():
    start = start_record()
    config = make_config(detectors={"dead-relu": {"severity": "error"}})
    (finding,) = only(run_suite(dead_stream(start, 30), start, config)[0], "dead-relu")
    assert finding.severity == "error"


def test_disabled_and_ignored_codes_report_nothing():
    start = start_record()
    records = dead_stream(start, 30)
    assert only(run_suite(records, start, make_config(detectors={"dead-relu": {"enabled": False}}))[0],
                "dead-relu") == []
    assert only(run_suite(records, start, make_config(ignore=["dead-relu"]))[0], "dead-relu") == []


def test_suite_reports_first_firing_at_the_confirming_record():
    start = start_record()
    _, fired = run_suite(dead_stream(start, 30), start)
    assert fired["dead-relu"] == 9  # patience 10: records 0..9


def test_unknown_threshold_is_rejected_with_the_valid_names():
    with pytest.raises(Exception, match="fraction"):
        make_config(detectors={"dead-relu": {"fractoin": 0.3}})


def test_one_finding_per_code_and_layer_over_a_long_stream():
    """Conditions that come and go for 3000 steps still give at most one finding per code and layer."""
    start = start_record(MLP_RELU, loss={"kind": "cross_entropy", "from_logits": False})
    recs = []
    for s in range(3000):
        flip = (s // 50) % 2 == 0
        layers = {"dense1": {"a": {"dead": 12 if flip else 0}, "update_ratio": 0.5 if flip else 1e-3},
                  "dense2": {"a": {"dead": 9 if flip else 0}, "gW": {"norm": 1e-9}}}
        li = {"n": 300, "min": 0.0, "max": 1.0, "n_zero": 3 if flip else 0, "n_one": 0, "n_outside": 0,
              "n_below_eps": 0}
        recs.append(step_record(start, s, loss=1.0 + (5 if s % 700 == 0 and s > 100 else 0),
                                grad_norm=2000.0 if flip else 0.1, layers=layers, loss_in=li))
    findings, _ = run_suite(recs, start)
    keys = [(f.code, f.layer) for f in findings]
    assert len(keys) == len(set(keys))
    assert {"dead-relu", "log-zero", "exploding-gradients", "large-update-ratio"} <= set(codes(findings))
    (dead1,) = [f for f in findings if f.code == "dead-relu" and f.layer == "dense1"]
    assert dead1.step == 0
    assert dead1.evidence["records_seen"] == dead1.evidence["last"] + 1


def test_healthy_streams_report_nothing():
    for layers, loss in ((MLP_131, None), (MLP_RELU, {"kind": "cross_entropy", "from_logits": True}),
                         (MLP_SIGMOID, {"kind": "bce", "from_logits": True})):
        start = start_record(layers, loss=loss, total_steps=400)
        findings, fired = run_suite(healthy_stream(start, 400), start)
        assert findings == [] and fired == {}, [f.message for f in findings]


def test_cheap_records_between_full_ones_are_handled():
    start = start_record()
    recs = [step_record(start, s, loss=healthy_loss(s), full=s % 10 == 0, layers={"dense1": {"a": {"dead": 3}}})
            for s in range(200)]
    (f,) = only(run_suite(recs, start)[0], "dead-relu")
    assert f.step == 0 and f.evidence["records"] == 20 and "to the end" in f.message

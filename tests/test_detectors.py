"""Detectors over synthetic record streams that follow docs/log-schema.md.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Iterable, Optional

import pytest

from nnprobe.config import Config
from nnprobe.diagnose.detectors import REGISTRY, DetectorSuite, RunContext, all_codes, explain
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding

NAN, INF = float("nan"), float("inf")
END = {"type": "end", "status": "completed", "steps": 0, "final_loss": 0.1, "stopped_by": None}

# ---------------------------------------------------------------- record factory

MLP_131 = [("dense1", 1, 3, "leaky_relu"), ("dense2", 3, 1, "identity")]
MLP_RELU = [("dense1", 2, 16, "relu"), ("dense2", 16, 16, "relu"), ("dense3", 16, 3, "softmax")]
MLP_SIGMOID = [("dense1", 2, 16, "sigmoid"), ("dense2", 16, 1, "sigmoid")]


def merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def rule_std(fan_in: int, units: int, activation: str) -> float:
    if activation in ("relu", "leaky_relu", "elu", "gelu"):
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + units))


def start_record(layers=MLP_131, *, loss=None, optimizer=None, data=None, dtype="float64",
                 total_steps=100, task=None) -> dict:
    specs = [{"name": n, "fan_in": fi, "units": u, "activation": act, "is_output": i == len(layers) - 1}
             for i, (n, fi, u, act) in enumerate(layers)]
    loss = merge({"kind": "mse", "reduction": "mean", "from_logits": False, "epsilon": 0.0, "l2": 0.0}, loss)
    n_features = layers[0][1]
    classification = loss["kind"] != "mse"
    base_data = {"n_train": 100, "n_val": 0, "n_features": n_features,
                 "n_classes": layers[-1][2] if classification else None,
                 "input_mean": [0.0] * n_features, "input_std": [1.0] * n_features,
                 "input_min": [-2.0] * n_features, "input_max": [2.0] * n_features,
                 "target_mean": None if classification else 0.0, "target_std": None if classification else 1.0,
                 "target_min": None if classification else -2.0, "target_max": None if classification else 2.0}
    return {"type": "start", "schema": 1, "nnprobe": "0.1.0", "name": "t", "seed": 0,
            "task": task or ("classification" if classification else "regression"), "dtype": dtype,
            "probes_every": 1, "total_steps": total_steps, "layers": specs, "loss": loss,
            "optimizer": merge({"kind": "sgd", "lr": 0.01, "clip_grad_norm": None}, optimizer),
            "data": merge(base_data, data)}


def layer_stats(spec: dict, over: Optional[dict] = None) -> dict:
    """A healthy per-layer object for this layer spec, with `over` deep-merged in."""
    fan_in, units, act = spec["fan_in"], spec["units"], spec["activation"]
    std = rule_std(fan_in, units, act)
    sat = 0.02 if act in ("sigmoid", "tanh") else None
    healthy = {
        "name": spec["name"],
        "z": {"mean": 0.1, "std": 1.0, "min": -3.0, "max": 3.2, "nan": 0, "posinf": 0, "neginf": 0, "sat_frac": sat},
        "a": {"mean": 0.4, "std": 0.6, "min": 0.0, "max": 3.2, "nan": 0, "posinf": 0, "neginf": 0,
              "zero_frac": 0.3, "dead": 0},
        "gW": {"norm": 0.05, "maxabs": 0.02, "nonfinite": 0, "zero_frac": 0.0},
        "gb": {"norm": 0.01, "maxabs": 0.01, "nonfinite": 0},
        "W": {"norm": std * math.sqrt(fan_in * units), "mean": 0.0, "std": std, "min": -2 * std, "max": 2 * std,
              "pos_frac": 0.5, "nonfinite": 0},
        "b": {"norm": 0.0, "mean": 0.0},
        "update_ratio": 1e-3,
    }
    return merge(healthy, over)


def step_record(start: dict, step: int, *, loss: float = 0.5, grad_norm: float = 0.1, full: bool = True,
                layers: Optional[dict[str, dict]] = None, nonfinite=None, loss_in=None, **extra) -> dict:
    rec = {"type": "step", "step": step, "full": full, "loss": loss, "grad_norm": grad_norm,
           "nonfinite": nonfinite, "loss_in": loss_in, **extra}
    if full:
        rec["layers"] = [layer_stats(s, (layers or {}).get(s["name"])) for s in start["layers"]]
    return rec


def healthy_loss(step: int) -> float:
    return 0.05 + 0.95 * math.exp(-step / 40)


def healthy_stream(start: dict, n: int, **kw) -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s), **kw) for s in range(n)]


def make_config(**sections) -> Config:
    raw = merge({"data": {"source": "affine"}}, sections)
    return Config.model_validate(raw)


def run_suite(records: Iterable[dict], start: dict, config: Optional[Config] = None,
              end: Optional[dict] = END) -> tuple[list[Finding], dict[str, int]]:
    """All findings, and for each code the step of the record at which the suite reported it first fired."""
    suite = DetectorSuite(config or make_config(), start)
    fired: dict[str, int] = {}
    for rec in records:
        for code in suite.observe(rec):
            fired[code] = rec["step"]
    return suite.finish(end), fired


def run_one(code: str, records: Iterable[dict], start: dict, config: Optional[Config] = None,
            settings: Optional[dict] = None, end: Optional[dict] = END) -> tuple[list[Finding], Optional[int]]:
    """One detector's findings and the step of the record where its first_step got set."""
    det = REGISTRY[code](RunContext(start=start, config=config or make_config()), settings)
    fired_at = None
    for rec in records:
        det.observe(rec)
        if fired_at is None and det.first_step is not None:
            fired_at = rec["step"]
    return det.static() + det.finish(end), fired_at


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# ---------------------------------------------------------------- the registry and the contract


def test_every_spec_code_is_registered_in_report_order():
    assert all_codes() == [
        "nonfinite", "log-zero", "output-loss-mismatch", "exploding-gradients", "vanishing-gradients",
        "dead-relu", "saturated-activations", "unnormalized-inputs", "poor-init", "large-update-ratio",
        "loss-divergence", "loss-plateau", "gradient-mismatch",
    ]


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


def dead_stream(start: dict, n: int, dead: int = 2, layer: str = "dense1") -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s), layers={layer: {"a": {"dead": dead}}}) for s in range(n)]


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


# ---------------------------------------------------------------- nonfinite


def exploding_to_nan(start: dict) -> list[dict]:
    recs = [step_record(start, s, loss=10.0 ** (2 * s + 1), grad_norm=10.0 ** (3 * s + 2),
                        layers={"dense1": {"W": {"norm": 10.0 ** (s + 1)}, "z": {"max": 10.0 ** (s + 2)}}})
            for s in range(4)]
    recs.append(step_record(start, 4, loss=NAN, grad_norm=NAN,
                            nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense2"},
                            layers={"dense2": {"z": {"nan": 0, "posinf": 2, "neginf": 1}}}))
    recs.append(step_record(start, 5, loss=NAN, grad_norm=NAN,
                            nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense1"}))
    return recs


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


# ---------------------------------------------------------------- output-loss-mismatch


def mismatch(layers, loss, data=None) -> list[Finding]:
    start = start_record(layers, loss=loss, data=data)
    return DetectorSuite(make_config(), start).static_findings()


MISMATCHED = [
    ("relu", "bce"), ("identity", "bce"), ("tanh", "bce"), ("softmax", "bce"),
    ("relu", "cross_entropy"), ("identity", "cross_entropy"), ("tanh", "cross_entropy"),
    ("sigmoid", "cross_entropy"),
]


@pytest.mark.parametrize("output, kind", MISMATCHED, ids=lambda x: str(x))
def test_output_loss_mismatch_fires_on_each_wrong_pair(output, kind):
    (f,) = only(mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, output)], {"kind": kind}),
                "output-loss-mismatch")
    assert f.step is None and f.layer == "dense2" and f.severity == "error"
    assert f"model.output {output} into loss.kind {kind}" in f.message
    assert any("loss.from_logits: true" in x for x in f.fixes)


@pytest.mark.parametrize("output, kind", [("sigmoid", "bce"), ("softmax", "cross_entropy"), ("identity", "mse")])
def test_output_loss_mismatch_quiet_on_matching_pairs(output, kind):
    assert only(mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, output)], {"kind": kind}),
                "output-loss-mismatch") == []


def test_softmax_over_one_bce_unit_is_called_constant():
    (f,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 1, "softmax")], {"kind": "bce"})
    assert "constant 1.0" in f.message
    (g,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, "softmax")], {"kind": "bce"})
    assert "constant" not in g.message


def test_softmax_into_bce_suggests_cross_entropy():
    (f,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, "softmax")], {"kind": "bce"})
    assert f.fixes[0].startswith("loss.kind: cross_entropy")


def test_bounded_output_cannot_reach_regression_targets():
    data = {"target_min": 1.0, "target_max": 100.0}
    (f,) = only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "sigmoid")], None, data),
                "output-loss-mismatch")
    assert "[0, 1]" in f.message and "[1, 100]" in f.message and f.fixes[0].startswith("model.output: identity")
    in_range = {"target_min": 0.0, "target_max": 1.0}
    assert only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "sigmoid")], None, in_range),
                "output-loss-mismatch") == []


def test_softmax_over_one_regression_unit_is_constant():
    (f,) = only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "softmax")], None), "output-loss-mismatch")
    assert "constant 1.0" in f.message


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


# ---------------------------------------------------------------- large-update-ratio


def ratio_records(start: dict, ratio: float, n: int, layer: str = "dense1", loss=lambda s: 0.5) -> list[dict]:
    return [step_record(start, s, loss=loss(s), layers={layer: {"update_ratio": ratio}}) for s in range(n)]


def test_large_update_ratio_too_high_suggests_an_lr_from_the_ratio():
    start = start_record(optimizer={"lr": 0.5})
    (f,), fired_at = run_one("large-update-ratio", ratio_records(start, 0.5, 30), start)
    assert fired_at == 20 and f.step == 0 and f.layer == "dense1"
    assert "dense1 update ratio ||dW||/||W|| was above 0.1 from step 0 to the end" in f.message
    assert "geometric mean 0.5" in f.message and "optimizer.lr 0.5 is too high" in f.message
    assert f.fixes[0].startswith("optimizer.lr: 0.001 ")


def test_large_update_ratio_too_low():
    start = start_record(optimizer={"lr": 1e-10})
    (f,), _ = run_one("large-update-ratio", ratio_records(start, 1e-12, 30), start)
    assert "was below 1e-07" in f.message and "too low" in f.message
    assert f.fixes[0].startswith("optimizer.lr: 1.0e-01 ") or f.fixes[0].startswith("optimizer.lr: 0.1 ")
    assert f.evidence["suggested_lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("ratio, fires", [(0.099, False), (0.101, True)])
def test_large_update_ratio_high_edge(ratio, fires):
    start = start_record()
    assert bool(run_one("large-update-ratio", ratio_records(start, ratio, 25), start)[0]) is fires


@pytest.mark.parametrize("ratio, fires", [(1.01e-7, False), (0.99e-7, True)])
def test_large_update_ratio_low_edge(ratio, fires):
    start = start_record()
    assert bool(run_one("large-update-ratio", ratio_records(start, ratio, 25), start)[0]) is fires


@pytest.mark.parametrize("n, fires", [(9, False), (10, True)])
def test_large_update_ratio_patience_edge(n, fires):
    start = start_record()
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 0.5 if 30 <= s < 30 + n else 1e-3}})
            for s in range(60)]
    found, _ = run_one("large-update-ratio", recs, start)
    assert bool(found) is fires
    if fires:
        assert found[0].step == 30 and "from step 30 to step 39" in found[0].message


@pytest.mark.parametrize("n, fires", [(20, False), (21, True)])
def test_large_update_ratio_warmup_edge(n, fires):
    """A run of high ratios from step 0 must reach past step 20 (steps 0..20 = 21 records)."""
    start = start_record()
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 0.5 if s < n else 1e-3}}) for s in range(60)]
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


def test_large_update_ratio_target_override_changes_the_suggestion():
    start = start_record(optimizer={"lr": 0.5})
    (f,), _ = run_one("large-update-ratio", ratio_records(start, 0.5, 25), start, settings={"target": 1e-2})
    assert f.evidence["suggested_lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("final, fires", [(1.01e-3, True), (0.99e-3, False)])
def test_large_update_ratio_low_not_when_converged(final, fires):
    start = start_record()
    recs = ratio_records(start, 1e-9, 25, loss=lambda s: 1.0 if s == 0 else final)
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


@pytest.mark.parametrize("rms, fires", [(0.99e-7, False), (1.01e-7, True)])
def test_large_update_ratio_low_needs_a_gradient(rms, fires):
    """A tiny update from a ~zero gradient (a dead layer) is not a learning rate that is too low."""
    start = start_record(optimizer={"lr": 1e-10})
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 1e-12, "gW": {"norm": rms * math.sqrt(3)}}})
            for s in range(25)]
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


def test_large_update_ratio_early_transient_is_not_reported():
    start = start_record()
    recs = [step_record(start, s, layers={"dense2": {"update_ratio": 0.5 if s < 15 else 1e-3}}) for s in range(100)]
    assert run_one("large-update-ratio", recs, start)[0] == []


# ---------------------------------------------------------------- loss-divergence


def diverging(start: dict, rise_at: int, n: int, to: float = 50.0) -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s) if s < rise_at else to, full=False) for s in range(n)]


def test_loss_divergence_fires_when_the_loss_climbs_far_above_its_best():
    start = start_record()
    (f,), fired_at = run_one("loss-divergence", diverging(start, 200, 260), start)
    assert fired_at == f.step and 200 <= f.step <= 205 and f.layer is None
    assert "more than 10x its best" in f.message and "peaked at 50" in f.message and "to the end" in f.message


def test_loss_divergence_quiet_on_minibatch_noise():
    start = start_record()
    recs = [step_record(start, s, loss=healthy_loss(s) * (0.3 if s % 7 == 0 else 1.0 + 0.5 * (s % 3)), full=False)
            for s in range(300)]
    assert run_one("loss-divergence", recs, start)[0] == []


def flat_then(start: dict, level: float, n: int = 60, after: int = 30) -> list[dict]:
    """Loss 1.0 then exactly `level` x 1.0 from step `after` on (smoothing 1 makes the average the raw loss)."""
    return [step_record(start, s, loss=1.0 if s < after else level, full=False) for s in range(n)]


@pytest.mark.parametrize("level, fires", [(9.9, False), (10.1, True)])
def test_loss_divergence_factor_edge(level, fires):
    start = start_record()
    found, _ = run_one("loss-divergence", flat_then(start, level), start, settings={"smoothing": 1.0})
    assert bool(found) is fires


@pytest.mark.parametrize("warmup, fires", [(31, False), (30, True)])
def test_loss_divergence_warmup_edge(warmup, fires):
    start = start_record()
    recs = flat_then(start, 20.0, n=31)
    found, _ = run_one("loss-divergence", recs, start, settings={"smoothing": 1.0, "warmup": warmup})
    assert bool(found) is fires


def test_loss_divergence_smoothing_damps_a_single_spike():
    start = start_record()
    recs = [step_record(start, s, loss=30.0 if s == 50 else 1.0, full=False) for s in range(80)]
    assert run_one("loss-divergence", recs, start)[0] == []
    assert len(run_one("loss-divergence", recs, start, settings={"smoothing": 1.0})[0]) == 1


@pytest.mark.parametrize("best, fires", [(1.1e-3, True), (0.9e-3, False)])
def test_loss_divergence_min_rise_edge(best, fires):
    """Rise from `best` to 10.5x best must exceed 1% of the first loss (1.0): 9.5 x best > 0.01."""
    start = start_record()
    recs = [step_record(start, s, loss=1.0 if s == 0 else (best if s < 40 else 10.5 * best), full=False)
            for s in range(60)]
    assert bool(run_one("loss-divergence", recs, start, settings={"smoothing": 1.0})[0]) is fires


# ---------------------------------------------------------------- loss-plateau


def plateau(start: dict, n: int, level: float = 1.0, first: float = 1.1, drift: float = 0.0) -> list[dict]:
    return [step_record(start, s, loss=first if s == 0 else level * (1 - drift) ** (s // 100), full=False)
            for s in range(n)]


def test_loss_plateau_is_info_and_says_how_long():
    start = start_record()
    (f,), fired_at = run_one("loss-plateau", plateau(start, 500), start)
    assert f.severity == "info" and f.step == 100 and fired_at == 199
    assert "did not improve at all between step 100 and step 199" in f.message
    assert "4 window(s) of 100 steps" in f.message and "(to the end)" in f.message


@pytest.mark.parametrize("drift, fires", [(0.0011, False), (0.0009, True)])
def test_loss_plateau_min_improvement_edge(drift, fires):
    start = start_record()
    assert bool(run_one("loss-plateau", plateau(start, 300, drift=drift), start)[0]) is fires


@pytest.mark.parametrize("level, fires", [(0.099, False), (0.101, True)])
def test_loss_plateau_min_fraction_edge(level, fires):
    start = start_record()
    assert bool(run_one("loss-plateau", plateau(start, 300, level=level, first=1.0), start)[0]) is fires


def test_loss_plateau_window_override():
    start = start_record()
    (f,), _ = run_one("loss-plateau", plateau(start, 300), start, settings={"window": 50})
    assert f.step == 50 and "of 50 steps" in f.message


def test_loss_plateau_quiet_while_learning():
    start = start_record()
    assert run_one("loss-plateau", healthy_stream(start, 400), start)[0] == []


# ---------------------------------------------------------------- gradient-mismatch


def test_gradient_mismatch_emits_nothing_from_records():
    start = start_record()
    found, fired_at = run_one("gradient-mismatch", exploding_to_nan(start), start)
    assert found == [] and fired_at is None
    assert REGISTRY["gradient-mismatch"].thresholds["max_rel_error"].default == 1e-4

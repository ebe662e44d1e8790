"""The configs reproduce what they claim: the four forum cases name their real causes, their fixed
twins and the healthy runs report nothing above info, and each hand-made pathology in
tests/cases/ is caught by the detector made for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnprobe.config import load_config
from nnprobe.findings import Finding, at_or_above
from nnprobe.train.run import train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
CASES = Path(__file__).resolve().parent / "cases"


def run(path: Path, tmp_path: Path, overrides: tuple[str, ...] = ()):
    config = load_config(path, overrides=list(overrides))
    return train(config, out_dir=tmp_path / "run", progress=None)


def last_step(result) -> dict:
    lines = (Path(result.run_dir) / "steps.jsonl").read_text(encoding="utf-8").splitlines()
    return next(r for r in map(json.loads, reversed(lines)) if r["type"] == "step")


def by_code(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


# ---------------------------------------------------------------- the four forum cases


def test_relu_regression_names_scale_init_and_the_explosion(tmp_path):
    result = run(CONFIGS / "relu-regression.yaml", tmp_path)
    found = by_code(result.findings)
    assert result.status == "diverged" and result.steps < 10
    assert {"unnormalized-inputs", "poor-init", "exploding-gradients", "nonfinite"} <= set(found)
    (inputs,) = found["unnormalized-inputs"]
    assert "feature 0 spans [0, 98]" in inputs.message and "regression targets" in inputs.message
    assert {f.layer for f in found["poor-init"]} == {"dense1", "dense2"}
    assert all("all 3 weights are positive" in f.message for f in found["poor-init"])
    (explode,) = found["exploding-gradients"]
    # the true norm at step 4; its sum of squares overflows float64, which the log once showed as inf
    assert explode.step == 0 and explode.evidence["peak"] == pytest.approx(6.39e243, rel=1e-3)
    (nonfinite,) = found["nonfinite"]
    assert nonfinite.step == result.steps - 1
    assert any(x.startswith("loss.reduction: mean") for x in nonfinite.fixes)


def test_relu_regression_fixed_is_clean_and_fits(tmp_path):
    result = run(CONFIGS / "relu-regression-fixed.yaml", tmp_path)
    assert result.status == "completed" and at_or_above(result.findings, "warning") == []
    assert result.final_loss < 1e-3


def test_nan_cost_is_log_of_an_exact_one_not_bouncing(tmp_path):
    result = run(CONFIGS / "nan-cost.yaml", tmp_path)
    found = by_code(result.findings)
    assert result.status == "diverged" and result.stopped_by == "nonfinite"
    (log_zero,) = found["log-zero"]
    (nonfinite,) = found["nonfinite"]
    assert log_zero.step == nonfinite.step > 300  # the loss fell for hundreds of steps first
    assert log_zero.evidence["n_one"] >= 1 and "probability 1.0 reached exactly" in log_zero.message
    assert nonfinite.evidence["tensor"] == "loss" and nonfinite.fixes[0].startswith("loss.from_logits: true")
    assert set(found) == {"log-zero", "nonfinite"}


def test_nan_cost_a_lower_learning_rate_only_postpones_it(tmp_path):
    base = run(CONFIGS / "nan-cost.yaml", tmp_path / "a").findings
    slower = run(CONFIGS / "nan-cost.yaml", tmp_path / "b",
                 ("optimizer.lr=0.05", "training.steps=1500", "probes.every=50")).findings
    first = next(f.step for f in base if f.code == "log-zero")
    later = next(f.step for f in slower if f.code == "log-zero")
    assert later > 2 * first


def test_nan_cost_fixed_is_clean(tmp_path):
    result = run(CONFIGS / "nan-cost-fixed.yaml", tmp_path)
    assert result.status == "completed" and at_or_above(result.findings, "warning") == []
    assert result.final_loss < 1e-2


def test_relu_accuracy_names_the_mismatch_and_the_dead_units(tmp_path):
    result = run(CONFIGS / "relu-accuracy.yaml", tmp_path)
    found = by_code(result.findings)
    assert {"output-loss-mismatch", "dead-relu", "log-zero"} <= set(found)
    (mismatch,) = found["output-loss-mismatch"]
    assert "softmax into loss.kind bce" in mismatch.message
    (dead,) = found["dead-relu"]
    assert dead.layer == "dense1" and dead.evidence["to_end"] is True
    assert dead.evidence["peak_dead"] >= 0.5 * dead.evidence["units"]
    assert 0.3 <= last_step(result)["accuracy"] < 0.4  # chance level on three classes, as the author saw


def test_relu_accuracy_fixed_is_clean_and_accurate(tmp_path):
    result = run(CONFIGS / "relu-accuracy-fixed.yaml", tmp_path)
    assert result.status == "completed" and at_or_above(result.findings, "warning") == []
    assert last_step(result)["accuracy"] > 0.9


def test_relu_output_ce_names_the_mismatch_and_log_zero(tmp_path):
    result = run(CONFIGS / "relu-output-ce.yaml", tmp_path)
    found = by_code(result.findings)
    assert {"output-loss-mismatch", "log-zero"} <= set(found)
    (log_zero,) = found["log-zero"]
    assert log_zero.step == 0 and log_zero.evidence["n_zero"] > 0 and "relu output" in log_zero.message
    assert found["output-loss-mismatch"][0].fixes[0].startswith("model.output: sigmoid")


@pytest.mark.parametrize("name", ["relu-output-ce-fixed", "quickstart"])
def test_healthy_configs_report_nothing_above_info(name, tmp_path):
    result = run(CONFIGS / f"{name}.yaml", tmp_path)
    assert result.status == "completed"
    assert at_or_above(result.findings, "warning") == [], [f.message for f in result.findings]
    assert all(c.ok for c in result.checks)


# ---------------------------------------------------------------- hand-made pathologies


@pytest.mark.parametrize("case, expected", [
    ("large-lr-relu", {"dead-relu"}),
    ("float16-overflow", {"nonfinite", "unnormalized-inputs", "poor-init"}),
    ("saturating-sigmoid-bce", {"log-zero", "saturated-activations", "unnormalized-inputs"}),
], ids=str)
def test_pathological_case_is_caught(case, expected, tmp_path):
    result = run(CASES / f"{case}.yaml", tmp_path)
    assert expected <= {f.code for f in result.findings}, [f.code for f in result.findings]


def test_float16_overflow_suggests_float32(tmp_path):
    result = run(CASES / "float16-overflow.yaml", tmp_path)
    (nonfinite,) = [f for f in result.findings if f.code == "nonfinite"]
    assert nonfinite.fixes[0].startswith("model.dtype: float32") and "65504" in nonfinite.fixes[0]
    assert any(x.startswith("data.normalize: standardize") for x in nonfinite.fixes)


def test_deep_sigmoid_gradient_vanishes_at_the_first_layer(tmp_path):
    result = run(CASES / "deep-sigmoid.yaml", tmp_path)
    (vanishing,) = [f for f in result.findings if f.code == "vanishing-gradients"]
    assert vanishing.layer == "dense1" and vanishing.evidence["worst"]["ratio"] < 1e-3


# ---------------------------------------------------------------- healthy runs of each family

FAMILIES = [
    ("healthy-classifier", ()),
    ("healthy-classifier", ("model.activation=leaky_relu",)),
    ("healthy-classifier", ("model.activation=sigmoid", "model.init=xavier_normal")),
    ("healthy-classifier", ("model.activation=tanh", "model.init=xavier_normal")),
    ("healthy-classifier", ("model.activation=elu",)),
    ("healthy-classifier", ("model.activation=gelu",)),
    ("healthy-classifier", ("model.activation=softplus", "model.init=xavier_normal")),
    ("healthy-classifier", ("model.output=sigmoid", "loss.kind=bce")),
    ("healthy-classifier", ("optimizer.kind=sgd", "optimizer.lr=0.5")),
    ("healthy-classifier", ("optimizer.kind=momentum", "optimizer.lr=0.1")),
    ("healthy-classifier", ("optimizer.kind=nesterov", "optimizer.lr=0.1")),
    ("healthy-classifier", ("optimizer.kind=rmsprop", "optimizer.lr=0.001")),
    ("healthy-classifier", ("training.batch_size=32", "model.dtype=float32")),
    ("healthy-classifier", ("data.source=blobs", "data.n_classes=4", "data.n_features=5")),
    ("healthy-regression", ()),
    ("healthy-regression", ("model.activation=relu", "model.init=he_normal")),
    ("healthy-regression", ("model.activation=sigmoid", "optimizer.kind=adam", "optimizer.lr=0.01")),
]


@pytest.mark.parametrize("case, overrides", FAMILIES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_healthy_family_reports_nothing_above_info(case, overrides, tmp_path):
    result = run(CASES / f"{case}.yaml", tmp_path, overrides)
    assert result.status == "completed"
    assert at_or_above(result.findings, "warning") == [], [f.message for f in result.findings]

"""examples/torch: the four seed cases written as PyTorch loops, and a healthy model, each probed.

Each test asserts the findings that name the forum question's real cause.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "torch"


def _example(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"torch_example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _found(result) -> dict:
    return {f.code: f for f in result.findings}


def test_nan_cost_names_the_loss_and_the_saturated_sigmoid(tmp_path):
    result = _example("nan_cost").main(str(tmp_path / "run"))
    found = _found(result)
    assert result.status == "diverged"
    assert found["nonfinite"].evidence["tensor"] == "loss" and found["nonfinite"].evidence["pass"] == "forward"
    assert found["nonfinite"].step > 5  # the loss fell for a while first
    assert found["log-zero"].step == found["nonfinite"].step and found["log-zero"].layer == "2"


def test_relu_output_cross_entropy_is_a_mismatch_and_log_zero_at_step_0(tmp_path):
    result = _example("relu_output_ce").main(str(tmp_path / "run"))
    found = _found(result)
    assert found["output-loss-mismatch"].step is None and found["output-loss-mismatch"].layer == "2"
    assert found["log-zero"].step == 0 and found["nonfinite"].step == 0


def test_relu_regression_explodes_from_the_all_positive_init_and_raw_inputs(tmp_path):
    result = _example("relu_regression").main(str(tmp_path / "run"))
    found = _found(result)
    assert result.status == "diverged"
    assert {"nonfinite", "exploding-gradients", "poor-init", "unnormalized-inputs"} <= set(found)
    assert found["exploding-gradients"].step < found["nonfinite"].step


def test_relu_accuracy_names_dead_units_and_the_large_step(tmp_path):
    result = _example("relu_accuracy").main(str(tmp_path / "run"))
    found = _found(result)
    assert found["dead-relu"].layer == "0"
    assert "large-update-ratio" in found


def test_healthy_model_has_nothing_above_info(tmp_path):
    result = _example("healthy").main(str(tmp_path / "run"))
    assert result.status == "completed"
    assert [f.code for f in result.findings if f.severity != "info"] == []

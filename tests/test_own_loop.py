"""examples/own-loop: the four forum cases as the hand-written NumPy loops people wrote, bugs intact,
recorded with nnprobe.Recorder. Each finds what its YAML twin in configs/ finds; where it cannot (a
loop's epsilon inside the log is invisible to the recorder), the test says what it finds instead.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

from nnprobe.config import load_config
from nnprobe.diagnose.load import load_run
from nnprobe.train.run import train

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "own-loop"


def run_example(name: str, out: Path):
    spec = importlib.util.spec_from_file_location(f"own_loop_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the loops' own overflow and log(0), as written
        return module.main(str(out))


def codes(result) -> set[str]:
    return {f.code for f in result.findings}


def one(result, code: str):
    (finding,) = [f for f in result.findings if f.code == code]
    return finding


# example -> (its YAML twin, codes the twin finds that the recorded loop cannot, codes only the loop shows)
TWINS = {
    "relu_regression": ("relu-regression", set(), set()),
    "nan_cost": ("nan-cost", set(), set()),
    # the loop adds 1e-8 inside its logs, which the recorder is not told: the twin's log-zero counts outputs
    # below that epsilon; the loop's outputs never reach exactly 0 or 1. loss-plateau (info) depends on the
    # twin's data. What the loop shows instead: its reluGrad writing into z (gradient-mismatch)
    "relu_accuracy": ("relu-accuracy", {"log-zero", "loss-plateau"}, {"gradient-mismatch"}),
    "relu_output_ce": ("relu-output-ce", set(), set()),
}


@pytest.mark.parametrize("name", list(TWINS))
def test_example_finds_what_its_yaml_twin_finds(name, tmp_path):
    twin, twin_only, loop_only = TWINS[name]
    recorded = run_example(name, tmp_path / "loop")
    trained = train(load_config(ROOT / "configs" / f"{twin}.yaml"), tmp_path / "twin")
    assert codes(recorded) == (codes(trained) - twin_only) | loop_only
    assert recorded.skipped == []  # every example hands over everything the detectors read
    assert load_run(recorded.run_dir).to_json() == recorded.to_json()


def test_relu_regression_loop_explodes_from_raw_integers_and_positive_weights(tmp_path):
    result = run_example("relu_regression", tmp_path / "run")
    assert result.status == "diverged" and result.steps < 10
    inputs = one(result, "unnormalized-inputs")
    assert "feature 0 spans" in inputs.message and "regression targets" in inputs.message
    assert {f.layer for f in result.findings if f.code == "poor-init"} == {"hidden", "output"}
    assert one(result, "exploding-gradients").step == 0
    assert one(result, "nonfinite").step == result.steps - 1


def test_nan_cost_loop_takes_the_log_of_an_exact_one_after_hundreds_of_epochs(tmp_path):
    result = run_example("nan_cost", tmp_path / "run")
    log_zero, nonfinite = one(result, "log-zero"), one(result, "nonfinite")
    assert result.status == "diverged" and log_zero.step == nonfinite.step > 200
    assert log_zero.evidence["n_one"] >= 1 and nonfinite.evidence["tensor"] == "loss"


def test_relu_accuracy_loop_shows_the_mismatch_dead_units_and_the_in_place_relugrad(tmp_path):
    result = run_example("relu_accuracy", tmp_path / "run")
    assert "softmax into loss.kind bce" in one(result, "output-loss-mismatch").message
    dead = one(result, "dead-relu")
    assert dead.layer == "hidden" and dead.evidence["to_end"] is True
    in_place = one(result, "gradient-mismatch")
    assert in_place.layer == "hidden" and in_place.step == 0 and in_place.evidence["tensors"] == ["z"]


def test_relu_output_ce_loop_feeds_exact_zeros_to_the_log_at_once(tmp_path):
    result = run_example("relu_output_ce", tmp_path / "run")
    log_zero = one(result, "log-zero")
    assert log_zero.step == 0 and log_zero.evidence["n_zero"] > 0
    assert one(result, "output-loss-mismatch").fixes[0].startswith("model.output: sigmoid")


def test_fixes_of_a_recorded_loop_do_not_quote_config_defaults_as_its_settings(tmp_path):
    """Regression: the recorded config holds defaults (init uniform, bias_init uniform) the loop never used, and
    the dead-relu fixes said "biases drawn from U[0, 1)" and "(now uniform)" of a loop with zero biases."""
    result = run_example("relu_accuracy", tmp_path / "run")
    text = " ".join(one(result, "dead-relu").fixes)
    assert "U[0, 1)" not in text and "now uniform" not in text

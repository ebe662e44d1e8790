"""`expect:`: each key becomes a Check that says what was expected and by how much the run missed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nnprobe.cli import cli
from nnprobe.config import validate_config
from nnprobe.diagnose.expectations import evaluate_expectations
from nnprobe.findings import Finding
from nnprobe.result import RunResult

GOOD = """\
name: good
seed: 3
data: {{source: moons, n_samples: 64, normalize: standardize}}
model: {{hidden: [8], activation: tanh, output: sigmoid, init: xavier_normal, bias_init: zeros}}
loss: {{kind: bce, from_logits: true}}
optimizer: {{kind: adam, lr: 0.01}}
training: {{steps: 30}}
expect: {expect}
"""

EXPLODING = """\
name: boom
data: {{source: affine, n_samples: 50}}
loss: {{kind: mse, reduction: sum}}
optimizer: {{lr: 0.01}}
training: {{steps: 50}}
expect: {expect}
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def config(expect: dict):
    return validate_config({"data": {"source": "blobs"}, "expect": expect}, source="c.yaml")


def result(**fields) -> RunResult:
    base = dict(run_dir="runs/x", status="completed", steps=100, final_loss=0.5, findings=[],
                start={"total_steps": 100}, max_grad_norm=3.0)
    base.update(fields)
    return RunResult(**base)


def finding(code: str, severity: str, step=4, layer="dense1") -> Finding:
    return Finding(code, severity, step, layer, "...", {}, [])


def only(expect: dict, res: RunResult):
    (check,) = evaluate_expectations(config(expect), res)
    return check


def test_nothing_pinned_means_no_checks():
    assert evaluate_expectations(config({}), result()) == []


def test_max_severity_names_the_offending_findings():
    res = result(findings=[finding("dead-relu", "warning"), finding("loss-plateau", "info", 9, None),
                           finding("nonfinite", "error", 5, "dense2")])
    check = only({"max_severity": "info"}, res)
    assert not check.ok and check.name == "expect.max_severity"
    assert check.message == ("expected no finding above info, got 2: nonfinite (error, dense2, step 5), "
                             "dead-relu (warning, dense1, step 4)")
    assert only({"max_severity": "error"}, res).ok


@pytest.mark.parametrize("loss,ok,needle", [
    (0.5, True, "final loss 0.5 < 1"),
    (1.5, False, "final loss 1.5 is not below 1 (over by 0.5, 50% over)"),
    (None, False, "no finite final loss (status diverged, stopped by nonfinite after 7 steps)"),
    (float("nan"), False, "no finite final loss"),
])
def test_final_loss_below(loss, ok, needle):
    res = result(final_loss=loss, status="diverged" if loss is None else "completed",
                 stopped_by="nonfinite" if loss is None else None, steps=7 if loss is None else 100)
    check = only({"final_loss_below": 1.0}, res)
    assert check.ok is ok and needle in check.message


def test_max_grad_norm_below():
    assert only({"max_grad_norm_below": 10}, result()).ok
    check = only({"max_grad_norm_below": 1.5}, result())
    assert not check.ok and "largest gradient norm 3 is not below 1.5 (2x the limit)" in check.message
    check = only({"max_grad_norm_below": 1.5}, result(max_grad_norm=None))
    assert not check.ok and "no gradient norm was recorded" in check.message


def test_steps_completed():
    assert only({"steps_completed": True}, result()).ok
    check = only({"steps_completed": True}, result(status="diverged", stopped_by="nonfinite", steps=6))
    assert not check.ok
    assert check.message == ("expected every step to complete, ran 6 of 100, 94 short "
                             "(status diverged, stopped by nonfinite after 6 steps)")
    assert evaluate_expectations(config({"steps_completed": False}), result(status="diverged")) == []


def test_findings_absent():
    res = result(findings=[finding("dead-relu", "warning"), finding("poor-init", "warning", None, "dense2")])
    check = only({"findings_absent": ["dead-relu", "nonfinite"]}, res)
    assert not check.ok and check.message == "expected none of dead-relu, nonfinite, got 1: dead-relu (warning, dense1, step 4)"
    assert only({"findings_absent": ["nonfinite"]}, res).ok


def test_unknown_code_in_findings_absent_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.format(expect="{findings_absent: [dead-relus]}"))
    result_ = run("validate", str(path))
    assert result_.exit_code == 2
    assert "did you mean 'dead-relu'" in result_.stderr


# ---------------------------------------------------------------- through train and diagnose


def test_train_meets_its_expectations(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.format(expect="{max_severity: info, final_loss_below: 10, steps_completed: true, "
                                       "max_grad_norm_below: 100, findings_absent: [nonfinite]}"))
    res = run("train", str(path), "--out", str(tmp_path / "run"), "--format", "json")
    assert res.exit_code == 0, res.output
    assert [c["ok"] for c in json.loads(res.stdout)["checks"]] == [True] * 5


def test_train_exits_1_and_says_by_how_much(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.format(expect="{final_loss_below: 0.0001}"))
    res = run("train", str(path), "--out", str(tmp_path / "run"), "--fail-on", "error")
    assert res.exit_code == 1
    text = " ".join(res.stdout.split())
    assert "expect.final_loss_below" in text and "is not below 0.0001 (over by" in text
    again = run("diagnose", str(tmp_path / "run"), "--format", "json")
    assert again.exit_code == 1
    (check,) = json.loads(again.stdout)["checks"]
    assert check["name"] == "expect.final_loss_below" and not check["ok"]


def test_non_finite_gradients_fail_max_grad_norm(tmp_path):
    """A diverging run's largest *finite* gradient norm may be under the limit; the inf ones are not."""
    path = tmp_path / "c.yaml"
    path.write_text(EXPLODING.format(expect="{max_grad_norm_below: 1.0e300}"))
    res = run("train", str(path), "--out", str(tmp_path / "run"), "--format", "json", "--fail-on", "never")
    doc = json.loads(res.stdout)
    assert doc["status"] == "diverged"
    (check,) = doc["checks"]
    assert not check["ok"] and "the gradient norm was not finite from step" in check["message"]

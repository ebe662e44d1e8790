"""`nnprobe fix` end to end: real training on the executor, the written config, exit statuses, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_cli import run, write

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# Seed case 4 in small: cross-entropy on a ReLU output.
RELU_OUTPUT = """\
# cross-entropy on a ReLU output
name: small
data: {source: moons, n_samples: 100}
model:
  hidden: [8]
  activation: relu
  output: relu      # not a probability
  init: he_normal
  bias_init: zeros
loss: {kind: bce}
optimizer:
  lr: 0.5
training: {steps: 60}
"""


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """`nnprobe fix` on the small seed case 4, run twice (json), the fixed config written by the first."""
    tmp = tmp_path_factory.mktemp("fix")
    config = write(tmp, RELU_OUTPUT)
    out = tmp / "fixed.yaml"
    first = run("fix", str(config), "-o", str(out), "--format", "json", "--jobs", "2")
    second = run("fix", str(config), "--format", "json", "--jobs", "2")
    return config, out, first, second


def test_fix_finds_a_clean_config_and_exits_0(fixed):
    config, out, first, _ = fixed
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert {"config", "control", "attempts", "patch", "fixed_config", "diff"} <= set(doc)
    assert doc["ok"] and doc["final"]["findings"] == [] or all(
        f["severity"] == "info" for f in doc["final"]["findings"])
    assert doc["patch"]["model.output"] == "sigmoid"
    assert doc["chain"][0] == {"finding": "output-loss-mismatch", "patch": {"model.output": "sigmoid"},
                               "verdict": "fixed", "as_step": False}
    assert {a["verdict"] for a in doc["attempts"]} <= {"fixed", "not fixed", "worse", "inconclusive", "invalid",
                                                      "better", "not better"}
    assert doc["runs"] <= doc["budget"] and doc["runs"] == 3 * (1 + len(doc["attempts"]))
    assert doc["control"]["findings"][0]["code"] in ("output-loss-mismatch", "nonfinite", "log-zero")


def test_the_written_config_keeps_comments_and_round_trips_through_validate(fixed):
    config, out, first, _ = fixed
    doc = json.loads(first.stdout)
    text = out.read_text()
    assert text == doc["fixed_config"] and doc["written"] == str(out) and doc["layout_kept"]
    assert "# cross-entropy on a ReLU output" in text and "output: sigmoid      # not a probability" in text
    patched = yaml.safe_load(config.read_text())
    assert yaml.safe_load(text)["model"]["output"] == "sigmoid"
    assert list(yaml.safe_load(text)) == list(patched)
    check = run("validate", str(out), "--fail-on", "warning")
    assert check.exit_code == 0, check.output
    assert doc["diff"].startswith(f"--- {config}\n+++ {out}\n") and "+  output: sigmoid" in doc["diff"]


def test_fix_is_deterministic(fixed):
    _, _, first, second = fixed
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["attempts"] == b["attempts"] and a["patch"] == b["patch"] and a["final"] == b["final"]
    assert b["written"] is None


def test_a_healthy_config_is_not_changed(tmp_path):
    healthy = yaml.safe_load((CONFIGS / "relu-output-ce-fixed.yaml").read_text())
    healthy["training"]["steps"] = 60
    config = write(tmp_path, yaml.safe_dump(healthy, sort_keys=False))
    result = run("fix", str(config), "--format", "json", "-o", str(tmp_path / "same.yaml"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["attempts"] == [] and doc["patch"] == {} and doc["diff"] == "" and doc["runs"] == 3
    assert (tmp_path / "same.yaml").read_text() == config.read_text()


def test_text_report_names_the_patches_and_the_verdicts(tmp_path):
    config = write(tmp_path, RELU_OUTPUT)
    result = run("fix", str(config), "--seeds", "2", "--budget", "4")
    assert result.exit_code == 0, result.output
    assert "round 1: output-loss-mismatch" in result.stdout and "model.output: sigmoid" in result.stdout
    assert "fixed ← taken" in result.stdout and "accepted patch chain:" in result.stdout
    assert "not written (use -o FILE)" in result.stdout
    assert "fixed" in result.stderr  # one progress line per attempt


def test_running_out_of_budget_exits_1(tmp_path):
    config = write(tmp_path, RELU_OUTPUT.replace("output: relu ", "output: identity"))
    result = run("fix", str(config), "--seeds", "1", "--budget", "1", "--format", "json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert not doc["ok"] and doc["stopped"] == "the budget of runs is spent" and doc["patch"] == {}
    assert doc["left"][0]["code"] == "output-loss-mismatch"


@pytest.mark.parametrize("args, needles", [
    (["missing.yaml"], ["missing.yaml: no such config file"]),
    (["BAD"], ["line 12: unknown key 'optimizer.lrr'", "Did you mean"]),
    (["GOOD", "--seeds", "3", "--budget", "2"], ["--budget 2 must be at least --seeds 3"]),
    (["GOOD", "-o", "GOOD"], ["that is the config being fixed"]),
    (["GOOD", "--seeds", "0"], ["--seeds"]),
])
def test_bad_input_is_exit_2_with_a_message(tmp_path, args, needles):
    good = write(tmp_path, RELU_OUTPUT, "good.yaml")
    bad = write(tmp_path, RELU_OUTPUT.replace("  lr: 0.5", "  lrr: 0.5"), "bad.yaml")
    args = [str(good) if a == "GOOD" else str(bad) if a == "BAD" else str(tmp_path / a) if a.endswith(".yaml")
            else a for a in args]
    result = run("fix", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr

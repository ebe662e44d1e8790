"""`diagnose RUN --baseline BASE`: regressions against a reference run of the same problem."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nnprobe.diagnose.baseline import compare_to_baseline, config_differences
from nnprobe.cli import cli
from nnprobe.errors import RunDirError
from nnprobe.findings import Finding
from nnprobe.result import RunResult

TINY = """\
name: tiny
seed: 3
data: {source: moons, n_samples: 64, normalize: standardize}
model: {hidden: [8], activation: relu, output: sigmoid, init: he_normal, bias_init: zeros}
loss: {kind: bce, from_logits: true}
optimizer: {kind: sgd, lr: 1.0}
training: {steps: 40}
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real small runs: the baseline, the same config again, a raised lr, a much higher lr, another network."""
    root = tmp_path_factory.mktemp("baseline")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    made = {}
    for key, sets in {"base": [], "same": [], "lr20": ["optimizer.lr=20"], "lr50": ["optimizer.lr=50"],
                      "wider": ["model.hidden=[16]"], "renamed": ["name=other", "expect.max_severity=error"]}.items():
        out = root / key
        args = ["train", str(cfg), "--out", str(out), "--format", "json", "--fail-on", "never"]
        for s in sets:
            args += ["--set", s]
        result = run(*args)
        assert result.exit_code == 0, result.output
        made[key] = str(out)
    return made


def diagnose(run_dir: str, baseline: str, *extra: str):
    return run("diagnose", run_dir, "--baseline", baseline, "--format", "json", *extra)


def checks(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"] if c["kind"] == "baseline"}


# ---------------------------------------------------------------- real runs through the CLI


def test_same_config_twice_is_not_a_regression(runs):
    result = diagnose(runs["same"], runs["base"])
    assert result.exit_code == 0, result.output
    got = checks(result)
    assert all(c["ok"] for c in got.values())
    assert got["baseline.config"]["message"] == "same config as the baseline"
    assert got["baseline.final_loss"]["message"].startswith("final loss ")


def test_raised_learning_rate_is_a_regression(runs):
    result = diagnose(runs["lr20"], runs["base"])
    assert result.exit_code == 1, result.output
    got = checks(result)
    assert got["baseline.config"]["ok"] and "optimizer.lr: 1.0 -> 20" in got["baseline.config"]["message"]
    assert not got["baseline.final_loss"]["ok"]
    assert got["baseline.final_loss"]["message"].startswith("worse: final loss")
    assert "(allowed +10%)" in got["baseline.final_loss"]["message"]
    new = [name for name, c in got.items() if name.startswith("baseline.new_finding[") and not c["ok"]]
    assert "baseline.new_finding[dead-relu]" in new


def test_improvement_over_the_baseline_passes(runs):
    result = diagnose(runs["base"], runs["lr20"])
    assert result.exit_code == 0, result.output
    got = checks(result)
    assert "gone since the baseline: " in got["baseline.new_findings"]["message"]


def test_a_finding_that_starts_earlier_is_a_regression(runs):
    """lr 20 vs lr 50: lower final loss and no new code, but dead-relu fires earlier."""
    result = diagnose(runs["lr20"], runs["lr50"])
    assert result.exit_code == 1, result.output
    got = checks(result)
    assert got["baseline.final_loss"]["ok"]
    assert not any(name.startswith("baseline.new_finding[") for name in got)
    assert not got["baseline.first_step[dead-relu]"]["ok"]
    assert "dead-relu now starts earlier: step 5 (baseline step 9)" in got["baseline.first_step[dead-relu]"]["message"]


def test_tolerance_decides_the_final_loss_check(runs):
    loose = checks(diagnose(runs["lr20"], runs["base"], "--tolerance", "1000"))
    assert loose["baseline.final_loss"]["ok"]


def test_different_network_is_refused_with_the_keys(runs):
    result = run("diagnose", runs["wider"], "--baseline", runs["base"])
    assert result.exit_code == 2, result.output
    assert "not runs of the same config" in result.stderr
    assert "model.hidden: [8] -> [16]" in result.stderr
    assert "Traceback" not in result.output


def test_name_and_expect_are_cosmetic(runs):
    result = diagnose(runs["renamed"], runs["base"])
    assert result.exit_code == 0, result.output
    assert checks(result)["baseline.config"]["message"] == "same config as the baseline"


def test_baseline_that_is_not_a_run_is_exit_2(runs, tmp_path):
    result = run("diagnose", runs["base"], "--baseline", str(tmp_path))
    assert result.exit_code == 2
    assert "not a run directory" in result.stderr


def test_text_report_lists_the_changes(runs):
    result = run("diagnose", runs["lr20"], "--baseline", runs["base"])
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "baseline.final_loss" in text and "optimizer.lr: 1.0 -> 20" in text


# ---------------------------------------------------------------- compare_to_baseline on constructed results

CONFIG = {"name": "x", "seed": 0, "data": {"source": "csv", "path": "/a/data.csv"},
          "model": {"hidden": [4], "output": "identity"}, "loss": {"kind": "mse", "reduction": "mean"},
          "optimizer": {"lr": 0.1}, "expect": {"max_severity": None}}


def result_in(tmp_path: Path, name: str, config: dict | None = None, **fields) -> RunResult:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config or CONFIG))
    base = dict(run_dir=str(run_dir), status="completed", steps=10, final_loss=1.0, findings=[])
    base.update(fields)
    return RunResult(**base)


def finding(code: str, step, severity: str = "warning", layer=None) -> Finding:
    return Finding(code, severity, step, layer, f"{code} happened", {}, [])


def by_name(checks_: list) -> dict:
    return {c.name: c for c in checks_}


@pytest.mark.parametrize(
    "run_loss,base_loss,ok",
    [(1.09, 1.0, True), (1.11, 1.0, False), (None, 1.0, False), (math.nan, 1.0, False), (None, None, True),
     (2.0, None, True), (0.0, 0.0, True), (1e-9, 0.0, False), (-0.5, -1.0, False), (-1.05, -1.0, True)],
)
def test_final_loss_rules(tmp_path, run_loss, base_loss, ok):
    r = result_in(tmp_path, "r", final_loss=run_loss)
    b = result_in(tmp_path, "b", final_loss=base_loss)
    check = by_name(compare_to_baseline(r, b, tolerance=0.1))["baseline.final_loss"]
    assert check.ok is ok, check.message
    assert check.kind == "baseline"


@pytest.mark.parametrize("run_status,base_status,ok", [
    ("completed", "completed", True), ("diverged", "completed", False), ("interrupted", "completed", False),
    ("failed", "diverged", False), ("completed", "diverged", True), ("diverged", "diverged", True),
])
def test_status_ordering(tmp_path, run_status, base_status, ok):
    r = result_in(tmp_path, "r", status=run_status, stopped_by="nonfinite" if run_status == "diverged" else None)
    b = result_in(tmp_path, "b", status=base_status)
    check = by_name(compare_to_baseline(r, b))["baseline.status"]
    assert check.ok is ok
    if not ok:
        assert check.message.startswith(f"status got worse: {base_status}")


def test_new_findings_below_warning_are_not_regressions(tmp_path):
    r = result_in(tmp_path, "r", findings=[finding("loss-plateau", 5, "info"), finding("dead-relu", 3)])
    b = result_in(tmp_path, "b")
    got = by_name(compare_to_baseline(r, b))
    assert "baseline.new_finding[loss-plateau]" not in got
    assert not got["baseline.new_finding[dead-relu]"].ok
    assert "new dead-relu (warning, step 3)" in got["baseline.new_finding[dead-relu]"].message


def test_earliest_step_per_code_is_compared(tmp_path):
    r = result_in(tmp_path, "r", findings=[finding("dead-relu", 8, layer="dense2"), finding("dead-relu", 6)])
    b = result_in(tmp_path, "b", findings=[finding("dead-relu", 7)])
    got = by_name(compare_to_baseline(r, b))["baseline.first_step[dead-relu]"]
    assert not got.ok and "step 6 (baseline step 7)" in got.message


def test_static_finding_in_both_is_not_earlier(tmp_path):
    r = result_in(tmp_path, "r", findings=[finding("poor-init", None)])
    b = result_in(tmp_path, "b", findings=[finding("poor-init", None)])
    assert by_name(compare_to_baseline(r, b))["baseline.first_step[poor-init]"].ok


def test_data_file_is_compared_by_name(tmp_path):
    moved = {**CONFIG, "data": {"source": "csv", "path": "/elsewhere/data.csv"}}
    r = result_in(tmp_path, "r", moved)
    b = result_in(tmp_path, "b")
    assert by_name(compare_to_baseline(r, b))["baseline.config"].message == "same config as the baseline"
    other = {**CONFIG, "data": {"source": "csv", "path": "/a/other.csv"}}
    with pytest.raises(RunDirError, match="data.path: data.csv -> other.csv"):
        compare_to_baseline(result_in(tmp_path, "o", other), b)


def test_config_differences_lists_added_and_removed_keys():
    extra = {**CONFIG, "optimizer": {"lr": 0.1, "momentum": 0.5}, "name": "renamed"}
    assert config_differences(extra, CONFIG) == [("optimizer.momentum", None, 0.5)]


def test_negative_tolerance_is_refused(tmp_path):
    r = result_in(tmp_path, "r")
    with pytest.raises(RunDirError, match="--tolerance"):
        compare_to_baseline(r, r, tolerance=-1)


def test_the_comparison_reads_the_configs_the_results_carry(runs, tmp_path):
    """compare_to_baseline read each run's config.yaml again although the results it was given had already
    loaded them; a renderer or comparison must work from the finished result alone."""
    import shutil

    from nnprobe.diagnose.load import load_run

    copies = {}
    for key in ("base", "lr20"):
        copies[key] = tmp_path / key
        shutil.copytree(runs[key], copies[key])
    results = {key: load_run(path) for key, path in copies.items()}
    for path in copies.values():
        (path / "config.yaml").unlink()  # from here on, only what the results carry
    got = {c.name: c for c in compare_to_baseline(results["lr20"], results["base"])}
    want = {c.name: c for c in compare_to_baseline(load_run(runs["lr20"]), load_run(runs["base"]))}
    assert [(c.name, c.ok, c.message) for c in got.values()] == [(c.name, c.ok, c.message) for c in want.values()]
    assert any("optimizer.lr" in c.message for c in got.values())

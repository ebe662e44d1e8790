"""`nnprobe check`: many configs in worker processes, one table, one exit status."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnprobe.check import CheckReport, Outcome, collect_configs, run_one
from nnprobe.cli import cli

GOOD = """\
name: {name}
seed: 3
data: {{source: moons, n_samples: 48, normalize: standardize}}
model: {{hidden: [6], activation: tanh, output: sigmoid, init: xavier_normal, bias_init: zeros}}
loss: {{kind: bce, from_logits: true}}
optimizer: {{kind: adam, lr: 0.01}}
training: {{steps: 20}}
expect: {{max_severity: info, steps_completed: true}}
"""

MISSES_EXPECT = GOOD.replace("steps_completed: true", "final_loss_below: 0.000001").format(name="strict")

EXPLODING = """\
name: boom
data: {source: affine, n_samples: 40}
loss: {kind: mse, reduction: sum}
optimizer: {lr: 0.01}
training: {steps: 30}
"""

INVALID = "data: {source: moon}\n"


def run(*args: str, env=None):
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def configs(tmp_path):
    d = tmp_path / "configs"
    d.mkdir()
    (d / "a-good.yaml").write_text(GOOD.format(name="good"))
    (d / "b-strict.yaml").write_text(MISSES_EXPECT)
    (d / "c-boom.yml").write_text(EXPLODING)
    (d / "d-invalid.yaml").write_text(INVALID)
    (d / "notes.txt").write_text("not a config")
    return d


def test_directory_runs_every_config_and_invalid_is_exit_2(configs, tmp_path):
    out_root = tmp_path / "out"
    result = run("check", str(configs), "--jobs", "2", "--out-root", str(out_root), "--format", "json")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    rows = {Path(c["config"]).name: c for c in doc["configs"]}
    assert set(rows) == {"a-good.yaml", "b-strict.yaml", "c-boom.yml", "d-invalid.yaml"}
    assert rows["a-good.yaml"]["verdict"] == "pass" and rows["a-good.yaml"]["expectations_ok"] is True
    assert rows["b-strict.yaml"]["verdict"] == "fail" and rows["b-strict.yaml"]["expectations_ok"] is False
    assert rows["c-boom.yml"]["verdict"] == "fail"
    assert rows["c-boom.yml"]["status"] == "diverged" and rows["c-boom.yml"]["worst_finding"]["code"] == "nonfinite"
    assert rows["c-boom.yml"]["expectations_ok"] is None
    assert rows["d-invalid.yaml"]["verdict"] == "invalid"
    assert "data.source: got 'moon' (did you mean 'moons'?)" in rows["d-invalid.yaml"]["message"]
    assert doc["summary"] == {"pass": 1, "fail": 2, "invalid": 1, "error": 0}
    # each trained config got its own fresh run directory under --out-root
    run_dirs = [Path(c["run_dir"]) for c in doc["configs"] if c["run_dir"]]
    assert len(set(run_dirs)) == 3 and all(p.parent == out_root and (p / "steps.jsonl").exists() for p in run_dirs)


def test_text_table_and_junit_file(configs, tmp_path):
    junit = tmp_path / "report.xml"
    result = run("check", str(configs / "a-good.yaml"), str(configs / "b-strict.yaml"), "--jobs", "2",
                 "--out-root", str(tmp_path / "out"), "--junit", str(junit))
    assert result.exit_code == 1, result.output
    table = result.stdout
    for header in ("config", "status", "steps", "final loss", "worst finding", "expect", "verdict"):
        assert header in table
    assert "PASS" in table and "FAIL" in table and "20/20" in table
    assert "1/2 ok" in table and "expect.final_loss_below: final loss" in table
    assert "2 config(s): 1 passed, 1 failed (--fail-on error)" in table
    root = ET.parse(junit).getroot()
    assert [s.get("name") for s in root.findall("testsuite")] == [
        f"nnprobe {configs / 'a-good.yaml'}", f"nnprobe {configs / 'b-strict.yaml'}"]
    assert root.get("failures") == "1"
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in root.findall("testsuite"))


def test_all_good_is_exit_0_and_github_annotations(configs, tmp_path):
    result = run("check", str(configs / "a-good.yaml"), str(configs / "c-boom.yml"), "--jobs", "1",
                 "--fail-on", "never", "--out-root", str(tmp_path / "out"), env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert any(line.startswith(f"::error file={configs / 'c-boom.yml'},title=nnprobe nonfinite::") for line in lines)


def test_fail_on_warning_fails_a_run_with_warnings(configs, tmp_path):
    out = run_one(str(configs / "c-boom.yml"), str(tmp_path / "out"), "never")
    assert out.verdict == "pass" and out.status == "diverged"
    warned = run_one(str(configs / "c-boom.yml"), str(tmp_path / "out"), "warning")
    assert warned.verdict == "fail"
    assert ET.fromstring(warned.junit).get("failures") != "0"


def test_missing_paths_and_empty_directories_are_invalid(tmp_path):
    (tmp_path / "empty").mkdir()
    found, invalid = collect_configs([tmp_path / "empty", tmp_path / "nope.yaml"])
    assert found == []
    assert [o.message for o in invalid] == [f"{tmp_path / 'empty'}: the directory holds no *.yaml or *.yml config.",
                                            f"{tmp_path / 'nope.yaml'}: no such config file or directory."]
    result = run("check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "INVALID" in result.stdout


def test_duplicate_paths_run_once(configs):
    found, _ = collect_configs([configs / "a-good.yaml", configs, configs / "a-good.yaml"])
    assert found.count(str(configs / "a-good.yaml")) == 1


def test_user_activation_with_a_wrong_derivative_is_invalid(tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples" / "user_activations"
    out = run_one(str(examples / "sigmoid-bug.yaml"), str(tmp_path / "out"))
    assert out.verdict == "invalid" and "derivative(z) disagrees" in out.message


@pytest.mark.parametrize("verdicts,status", [(["pass"], 0), (["pass", "fail"], 1), (["fail", "invalid"], 2),
                                             (["error", "pass"], 2), ([], 0)])
def test_exit_status_precedence(verdicts, status):
    assert CheckReport([Outcome(f"c{i}.yaml", v) for i, v in enumerate(verdicts)]).exit_status == status

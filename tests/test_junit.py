"""JUnit XML (parsed back with ElementTree) and GitHub workflow annotations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnprobe.cli import cli
from nnprobe.diagnose.detectors import REGISTRY, Detector, all_codes
from nnprobe.findings import Finding
from nnprobe.reports.junit import annotation, github_annotations, junit_suite, render_junit
from nnprobe.result import Check, RunResult

EXPLODING = """\
name: boom
data: {source: affine, n_samples: 50}
loss: {kind: mse, reduction: sum}
optimizer: {lr: 0.01}
training: {steps: 50}
expect: {final_loss_below: 1.0}
"""

# the detectors that run on a `train` run (gradient-mismatch reads only what nnprobe.Recorder records)
LIVE = [c for c in all_codes() if not (REGISTRY[c].observe is Detector.observe and REGISTRY[c].static is Detector.static)
        and not getattr(REGISTRY[c], "recorded_runs_only", False)]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def make_result(tmp_path: Path, findings=(), checks=(), **fields) -> RunResult:
    """A result whose run directory has no config.yaml: every live detector counts as having run."""
    base = dict(run_dir=str(tmp_path / "run"), status="diverged", steps=6, final_loss=None,
                findings=list(findings), checks=list(checks), start={"name": "demo"}, stopped_by="nonfinite")
    base.update(fields)
    return RunResult(**base)


NONFINITE = Finding("nonfinite", "error", 5, "dense2", "NaN in the loss <first> & \"quoted\"",
                    {"pass": "forward"}, ["data.normalize: standardize", "optimizer.lr: 0.0001"])
DEAD = Finding("dead-relu", "warning", 3, "dense1", "half the units are dead", {}, ["optimizer.lr: 0.01"])
PLATEAU = Finding("loss-plateau", "info", 40, None, "loss stopped improving", {}, [])


def parse(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(text.split("\n", 1)[1])


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}


def assert_counts_consistent(root: ET.Element) -> None:
    suites = root.findall("testsuite")
    for suite in suites:
        tcs = suite.findall("testcase")
        assert int(suite.get("tests")) == len(tcs)
        assert int(suite.get("failures")) == sum(1 for c in tcs if c.find("failure") is not None)
        assert int(suite.get("errors")) == sum(1 for c in tcs if c.find("error") is not None)
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key)) == sum(int(s.get(key)) for s in suites)


def test_one_case_per_detector_finding_and_check(tmp_path):
    checks = [Check("expect.final_loss_below", False, "no finite final loss"),
              Check("baseline.status", True, "completed", kind="baseline")]
    root = parse(render_junit(make_result(tmp_path, [NONFINITE, DEAD, PLATEAU], checks)))
    assert_counts_consistent(root)
    got = cases(root)
    # a passing case for every detector without findings, one case per finding
    for code in LIVE:
        if code not in ("nonfinite", "dead-relu", "loss-plateau"):
            assert got[f"nnprobe.detectors/{code}"].find("failure") is None
    assert "nnprobe.detectors/gradient-mismatch" not in got  # gradcheck-only: it does not run on a run
    assert got["nnprobe.detectors/nonfinite [dense2]"].find("failure") is not None
    assert got["nnprobe.detectors/dead-relu [dense1]"].find("failure") is None  # warning < error
    assert "below --fail-on error" in got["nnprobe.detectors/dead-relu [dense1]"].find("system-out").text
    assert got["nnprobe.expect/expect.final_loss_below"].find("failure").get("message") == "no finite final loss"
    assert got["nnprobe.baseline/baseline.status"].find("failure") is None
    suite = root.find("testsuite")
    assert suite.get("name") == "nnprobe demo" and suite.get("failures") == "2"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["status"] == "diverged" and props["stopped_by"] == "nonfinite" and props["final_loss"] == ""


def test_failure_text_has_message_step_layer_and_fixes(tmp_path):
    root = parse(render_junit(make_result(tmp_path, [NONFINITE])))
    failure = cases(root)["nnprobe.detectors/nonfinite [dense2]"].find("failure")
    assert failure.get("type") == "error"
    assert failure.get("message") == 'NaN in the loss <first> & "quoted"'  # escaped by ElementTree, parsed back
    text = failure.text
    assert "nonfinite (error) at step 5, layer dense2" in text
    assert 'NaN in the loss <first> & "quoted"' in text
    assert "  - data.normalize: standardize" in text and "  - optimizer.lr: 0.0001" in text
    assert '"pass": "forward"' in text


@pytest.mark.parametrize("fail_on,failing", [("error", 1), ("warning", 2), ("info", 3), ("never", 0)])
def test_fail_on_threshold(tmp_path, fail_on, failing):
    checks = [Check("expect.max_severity", False, "got an error")]
    root = parse(render_junit(make_result(tmp_path, [NONFINITE, DEAD, PLATEAU], checks), fail_on=fail_on))
    assert_counts_consistent(root)
    finding_failures = [c for c in root.iter("testcase")
                        if c.get("classname") == "nnprobe.detectors" and c.find("failure") is not None]
    assert len(finding_failures) == failing
    check_case = cases(root)["nnprobe.expect/expect.max_severity"]
    assert (check_case.find("failure") is None) == (fail_on == "never")


def test_ignored_and_disabled_detectors_are_not_cases(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {source: blobs, n_samples: 30}\ntraining: {steps: 3}\nignore: [loss-plateau]\n"
                   "detectors: {dead-relu: {enabled: false}}\n")
    out = tmp_path / "run"
    assert run("train", str(cfg), "--out", str(out), "--fail-on", "never").exit_code == 0
    result = run("diagnose", str(out), "--format", "junit", "--fail-on", "never")
    assert result.exit_code == 0
    names = {c.get("name") for c in parse(result.stdout).iter("testcase")}
    assert "loss-plateau" not in names and "dead-relu" not in names and "nonfinite" in names


def test_diagnose_junit_on_a_real_diverging_run(tmp_path):
    cfg = tmp_path / "boom.yaml"
    cfg.write_text(EXPLODING)
    out = tmp_path / "run"
    train = run("train", str(cfg), "--out", str(out), "--format", "json")
    assert train.exit_code == 1
    result = run("diagnose", str(out), "--format", "junit")
    assert result.exit_code == 1
    root = parse(result.stdout)
    assert_counts_consistent(root)
    got = cases(root)
    failing = [name for name, c in got.items() if c.find("failure") is not None]
    assert any(name.startswith("nnprobe.detectors/nonfinite") for name in failing)
    assert "nnprobe.expect/expect.final_loss_below" in failing
    summary = json.loads(train.stdout)
    assert root.find("testsuite/properties/property[@name='steps']").get("value") == str(summary["steps"])


def test_junit_suite_is_an_element_for_aggregation(tmp_path):
    suite = junit_suite(make_result(tmp_path, [NONFINITE]), name="custom")
    assert suite.tag == "testsuite" and suite.get("name") == "custom"


# ---------------------------------------------------------------- GitHub annotations


def test_annotations_levels_titles_and_escaping(tmp_path):
    two_lines = Finding("log-zero", "error", 2, None, "100% of probabilities\nat 0", {}, ["loss.from_logits: true"])
    checks = [Check("expect.final_loss_below", False, "final loss 3 is not below 1"),
              Check("expect.max_severity", True, "fine")]
    lines = github_annotations(make_result(tmp_path, [two_lines, DEAD, PLATEAU], checks),
                               config_file="configs/a,b:c.yaml")
    assert len(lines) == 4  # three findings and the failed check
    assert lines[0].startswith("::error file=configs/a%2Cb%3Ac.yaml,title=nnprobe log-zero::100%25 of probabilities%0Aat 0")
    assert "%0Afix: loss.from_logits: true" in lines[0]
    assert "\n" not in "".join(lines)
    assert lines[1].startswith("::warning ") and "title=nnprobe dead-relu::" in lines[1]
    assert lines[2].startswith("::notice ") and "title=nnprobe loss-plateau::" in lines[2]
    assert lines[3].startswith("::error ") and "title=nnprobe expect.final_loss_below::final loss 3" in lines[3]


def test_annotation_without_file():
    assert annotation("error", "nnprobe nonfinite", "NaN") == "::error title=nnprobe nonfinite::NaN"


def test_annotations_name_the_relative_config_from_meta(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("boom.yaml").write_text(EXPLODING)
    assert run("train", "boom.yaml", "--out", "run", "--fail-on", "never").exit_code == 0
    from nnprobe.diagnose.load import load_run

    lines = github_annotations(load_run("run"))
    assert lines and all("file=boom.yaml," in line for line in lines)
    assert any(line.startswith("::error file=boom.yaml,title=nnprobe nonfinite::") for line in lines)


def test_junit_and_annotations_render_from_the_result_alone(tmp_path):
    """Regression: junit read the run directory (config.yaml for the detectors that ran, meta.json for the
    duration and the config file) while rendering. The result now carries both; no file is opened."""
    result = RunResult(str(tmp_path / "gone"), "completed", 3, 0.1,
                       [Finding("loss-plateau", "info", 1, None, "stuck", {}, [])],
                       start={"name": "r"}, detector_codes=["nonfinite", "loss-plateau"],
                       meta={"duration_s": 1.5, "config_file": "configs/r.yaml"})
    suite = junit_suite(result)
    assert [c.get("name") for c in suite.findall("testcase")] == ["nonfinite", "loss-plateau"]
    assert suite.get("time") == "1.500"
    assert github_annotations(result)[0].startswith("::notice file=configs/r.yaml,")

"""The command line as a user meets it: exit statuses, messages, and train/diagnose agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnprobe.cli import cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

TINY = """\
name: tiny
seed: 3
data: {source: moons, n_samples: 64, normalize: standardize}
model: {hidden: [8], activation: tanh, output: sigmoid, init: xavier_normal, bias_init: zeros}
loss: {kind: bce, from_logits: true}
optimizer: {kind: adam, lr: 0.01}
training: {steps: 30}
"""

EXPLODING = """\
name: boom
data: {source: affine, n_samples: 50}
loss: {kind: mse, reduction: sum}
optimizer: {lr: 0.01}
training: {steps: 100}
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["train", "diagnose", "validate", "explain", "gradcheck", "report", "check", "fix"])
def test_every_command_has_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert f"Usage: nnprobe {command}" in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "nnprobe" in result.stdout


def test_train_json_is_one_document_and_matches_findings_file(tmp_path):
    out = tmp_path / "run"
    result = run("train", str(write(tmp_path, TINY)), "--out", str(out), "--format", "json")
    doc = json.loads(result.stdout)
    assert set(doc) >= {"run_dir", "status", "steps", "final_loss", "findings"}
    assert doc["status"] == "completed" and doc["steps"] == 30
    assert doc == json.loads((out / "findings.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["seed"] == 3 and meta["numpy"]


def test_diagnose_agrees_with_train(tmp_path):
    out = tmp_path / "run"
    trained = json.loads(run("train", str(write(tmp_path, EXPLODING)), "--out", str(out), "--format", "json").stdout)
    assert trained["status"] == "diverged"
    diagnosed = run("diagnose", str(out), "--format", "json")
    assert json.loads(diagnosed.stdout) == trained
    assert diagnosed.exit_code == 1


def test_exploding_run_exits_1_and_names_the_origin(tmp_path):
    result = run("train", str(write(tmp_path, EXPLODING)), "--out", str(tmp_path / "run"), "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    nonfinite = [f for f in doc["findings"] if f["code"] == "nonfinite"]
    assert len(nonfinite) == 1
    assert nonfinite[0]["step"] == doc["steps"] - 1  # stop_on: [nonfinite] stops at the step it fired


def test_fail_on_never_and_warning(tmp_path):
    cfg = str(write(tmp_path, EXPLODING))
    assert run("train", cfg, "--out", str(tmp_path / "a"), "--fail-on", "never", "-q").exit_code == 0
    healthy = str(write(tmp_path, TINY, "h.yaml"))
    assert run("train", healthy, "--out", str(tmp_path / "b"), "--fail-on", "error", "-q").exit_code == 0


def test_set_overrides_a_key(tmp_path):
    result = run("train", str(write(tmp_path, TINY)), "--out", str(tmp_path / "r"), "--format", "json",
                 "--set", "training.steps=4")
    assert json.loads(result.stdout)["steps"] == 4


def test_train_refuses_to_overwrite_a_run(tmp_path):
    cfg = str(write(tmp_path, TINY))
    out = tmp_path / "run"
    assert run("train", cfg, "--out", str(out), "-q").exit_code == 0
    before = (out / "steps.jsonl").read_bytes()
    assert_user_error(run("train", cfg, "--out", str(out), "-q"), "not empty", "never overwrites")
    assert (out / "steps.jsonl").read_bytes() == before


def test_default_run_dirs_are_fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = str(write(tmp_path, TINY))
    first = json.loads(run("train", cfg, "--format", "json").stdout)["run_dir"]
    second = json.loads(run("train", cfg, "--format", "json").stdout)["run_dir"]
    assert first != second
    assert Path(first).parent == Path("runs") == Path(second).parent


@pytest.mark.parametrize(
    "text, needles",
    [
        ("data: {source: moons}\noptimiser: {lr: 0.1}\n", ["unknown key 'optimiser'", "Did you mean 'optimizer'"]),
        ("data: {source: moons}\nmodel:\n  activaton: relu\n", ["model.activaton", "line 3", "model.activation"]),
        ("data: {source: moons}\noptimizer: {lr: fast}\n", ["optimizer.lr", "'fast'"]),
        ("data: {source: moons}\noptimizer: {lr: -1}\n", ["optimizer.lr", "greater than 0"]),
        ("data: {source: mooons}\n", ["data.source", "did you mean 'moons'"]),
        ("model: {hidden: [3]}\n", ["data", "missing"]),
        ("data: {source: moons}\nmodel:\n  hidden: [3\n", ["not valid YAML", "line"]),
        ("", ["empty"]),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("data: {source: moons}\nstop_on: [nonfinte]\n", ["stop_on", "did you mean 'nonfinite'"]),
        ("data: {source: moons}\ndetectors: {dead-relu: {fration: 0.3}}\n", ["detectors.dead-relu.fration", "fraction"]),
        ("data: {source: csv}\n", ["data.path is required"]),
        ("data: {source: moons}\nx: !!python/object:os.system ls\n", ["not valid YAML"]),
    ],
    ids=["unknown-top", "unknown-nested", "wrong-type", "out-of-range", "bad-literal", "missing-source",
         "bad-yaml", "empty", "not-mapping", "unknown-code", "unknown-threshold", "csv-no-path", "python-tag"],
)
def test_bad_configs_exit_2_with_a_message(tmp_path, text, needles):
    path = write(tmp_path, text)
    for command in ("validate", "train"):
        result = run(command, str(path), "-q") if command == "train" else run(command, str(path))
        assert_user_error(result, str(path), *needles)


def test_missing_config_file(tmp_path):
    assert_user_error(run("train", str(tmp_path / "nope.yaml")), "nope.yaml", "no such config file")


def test_bad_set_value(tmp_path):
    path = str(write(tmp_path, TINY))
    assert_user_error(run("validate", path, "--set", "optimizer.lr"), "KEY=VALUE")
    assert_user_error(run("validate", path, "--set", "optimizer.lr=[1"), "not valid YAML")
    assert_user_error(run("validate", path, "--set", "model.hidden.0=3"), "model.hidden")


def test_missing_data_file_is_a_user_error(tmp_path):
    path = write(tmp_path, "data: {source: csv, path: missing.csv}\n")
    assert_user_error(run("train", str(path), "-q"), "missing.csv")


def test_validate_schema_lists_every_section():
    result = run("validate", "--schema")
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == {"name", "seed", "data", "model", "loss", "optimizer", "training", "probes",
                                         "detectors", "ignore", "stop_on", "expect"}


def test_shipped_schema_copy_is_current():
    shipped = json.loads((CONFIGS.parent / "docs" / "config.schema.json").read_text())
    assert shipped == json.loads(run("validate", "--schema").stdout)


def test_diagnose_missing_and_non_run_dirs(tmp_path):
    assert_user_error(run("diagnose", str(tmp_path / "nope")), "no such run directory")
    assert_user_error(run("diagnose", str(tmp_path)), "not a run directory")


def test_diagnose_reads_a_corrupted_log(tmp_path):
    out = tmp_path / "run"
    run("train", str(write(tmp_path, TINY)), "--out", str(out), "-q")
    log = out / "steps.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[5] = "{this is not json\n"
    log.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])  # drop the end record, cut the last line
    result = run("diagnose", str(out), "--format", "json")
    doc = json.loads(result.stdout)
    assert doc["status"] == "interrupted"
    assert doc["steps"] == 30 - 2  # one garbage line, one cut-off line
    assert "line 6" in result.stderr and "cut off" in result.stderr
    assert any("no end record" in p for p in doc["log_problems"])


def test_diagnose_empty_log_is_a_user_error(tmp_path):
    out = tmp_path / "run"
    run("train", str(write(tmp_path, TINY)), "--out", str(out), "-q")
    (out / "steps.jsonl").write_text("")
    assert_user_error(run("diagnose", str(out)), "no readable start record")


def test_explain_list_and_unknown_code():
    listing = run("explain")
    assert listing.exit_code == 0
    for code in ("nonfinite", "log-zero", "dead-relu", "gradient-mismatch"):
        assert code in listing.stdout
    assert_user_error(run("explain", "dead-relus"), "did you mean 'dead-relu'")


def test_explain_a_code_quotes_its_thresholds():
    result = run("explain", "dead-relu")
    assert result.exit_code == 0
    assert "fraction" in result.stdout and "0.5" in result.stdout


def test_shipped_configs_validate():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert len(paths) >= 9
    for path in paths:
        result = run("validate", str(path))
        assert result.exit_code in (0, 1), result.output
        assert "valid" in result.stdout


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_train_and_diagnose_agree_on_every_shipped_config(tmp_path, config):
    """Live detectors and the offline re-read of the log must give the very same document."""
    out = tmp_path / "run"
    trained = run("train", str(CONFIGS / config), "--out", str(out), "--format", "json")
    diagnosed = run("diagnose", str(out), "--format", "json")
    assert json.loads(trained.stdout) == json.loads(diagnosed.stdout)
    assert trained.exit_code == diagnosed.exit_code


def test_shipped_findings_doc_is_current():
    """docs/findings.md is `nnprobe explain --format markdown`; a detector change must regenerate it."""
    result = run("explain", "--format", "markdown")
    assert result.exit_code == 0
    assert (CONFIGS.parent / "docs" / "findings.md").read_text() == result.stdout
    for code in ("nonfinite", "dead-relu", "gradient-mismatch"):
        assert f"\n## {code}\n" in result.stdout


def test_explain_one_code_as_markdown():
    result = run("explain", "poor-init", "--format", "markdown")
    assert "## poor-init" in result.stdout and "## dead-relu" not in result.stdout
    assert "`detectors.poor-init.scale_ratio`" in result.stdout


def test_the_report_order_does_not_depend_on_which_detector_module_was_imported_first():
    """Importing the torch probe (which reads detectors.outputs) before `explain` moved
    output-loss-mismatch up the list: the catalog's order must win whatever loaded first."""
    import subprocess
    import sys

    code = ("import nnprobe.diagnose.detectors.curve, nnprobe.diagnose.detectors.outputs\n"
            "from click.testing import CliRunner\nfrom nnprobe.cli import cli\n"
            "print(CliRunner().invoke(cli, ['explain', '--format', 'markdown']).output, end='')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out == (CONFIGS.parent / "docs" / "findings.md").read_text()

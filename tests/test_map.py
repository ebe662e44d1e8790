"""`nnprobe map`: grid parsing, the classification of runs into cells, the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnprobe.cli import cli
from nnprobe.diagnose.detectors import all_codes
from nnprobe.errors import ConfigError
from nnprobe.executor import TaskResult
from nnprobe.grid import Axis, parse_grid, parse_grids
from nnprobe.stability import (CODE_CLASS, NOT_DECIDING, UPDATE_RATIO_CLASS, Cell, StabilityMap, classify, seed_run,
                               worst)

ROOT = Path(__file__).resolve().parent.parent
REGRESSION = ROOT / "configs" / "relu-regression.yaml"
REGRESSION_FIXED = ROOT / "configs" / "relu-regression-fixed.yaml"

SMALL = """\
name: small
seed: 0
data: {source: moons, n_samples: 40, normalize: standardize}
model: {hidden: [4], activation: ACT, output: sigmoid, init: xavier_normal, bias_init: zeros}
loss: {kind: bce, from_logits: true}
optimizer: {kind: adam, lr: 0.01}
training: {steps: 15}
"""

KILLS_ITS_PROCESS = """\
import os
import signal


class Act:
    def forward(self, z):
        os.kill(os.getpid(), signal.SIGKILL)

    def derivative(self, z):
        return z * 0 + 1


act = Act()
"""


def run(*args: str):
    return CliRunner().invoke(cli, ["map", *map(str, args)], catch_exceptions=False)


# ---------------------------------------------------------------- --grid


def test_grid_list_values_are_yaml():
    assert parse_grid("optimizer.lr=0.1,1,10") == Axis("optimizer.lr", (0.1, 1, 10))
    assert parse_grid("data.normalize=none,standardize") == Axis("data.normalize", ("none", "standardize"))
    assert parse_grid("loss.from_logits=false,true").values == (False, True)
    assert parse_grid("model.activation=tanh,my_mod:Act").values == ("tanh", "my_mod:Act")


def test_grid_ranges_hand_computed():
    assert parse_grid("optimizer.lr=1e-4:1:5log").values == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert parse_grid("data.noise=0:1:5").values == (0.0, 0.25, 0.5, 0.75, 1.0)
    lr = parse_grid("optimizer.lr=1e-4:10:11log").values
    assert len(lr) == 11 and lr[1] == 0.000316228  # 10**-3.5 to six significant digits
    assert all(math.isclose(b / a, 10 ** 0.5, rel_tol=1e-5) for a, b in zip(lr, lr[1:]))
    assert parse_grid("training.batch_size=16:256:5log").values == (16, 32, 64, 128, 256)  # integer ends
    assert parse_grid("training.batch_size=0:8:5").values == (0, 2, 4, 6, 8)
    assert parse_grid("training.batch_size=1:2:3").values == (1.0, 1.5, 2.0)  # not integral: floats
    assert parse_grid("optimizer.lr=0.5:0.5:1").values == (0.5,)


@pytest.mark.parametrize("text, message", [
    ("optimizer.lr", "expected KEY=VALUES"),
    ("=0.1,1", "expected KEY=VALUES"),
    ("optimizer.lr=", "expected KEY=VALUES"),
    ("optimizer..lr=1", "dotted config path"),
    ("optimizer.lr=0.1,,1", "an empty value"),
    ("optimizer.lr=0:1:0", "between 1 and 1000 values"),
    ("optimizer.lr=0:1:5log", "above 0"),
    ("optimizer.lr={a: 1}", "each grid value is a single"),
    ("optimizer.lr=[1, 2", "not valid YAML"),
], ids=["no-equals", "no-key", "no-values", "empty-part", "empty-item", "zero-n", "log-zero", "mapping", "yaml"])
def test_bad_grid_syntax_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(text)


def test_one_or_two_distinct_axes():
    with pytest.raises(ConfigError, match="one or two"):
        parse_grids(["a=1", "b=1", "c=1"])
    with pytest.raises(ConfigError, match="both 'a'"):
        parse_grids(["a=1", "a=2"])


# ---------------------------------------------------------------- classification


def doc(status="completed", final_loss=0.1, findings=(), stopped_by=None):
    return {"status": status, "final_loss": final_loss, "steps": 10, "run_dir": None, "stopped_by": stopped_by,
            "findings": [{"code": c, "severity": s, "evidence": e} for c, s, e in findings]}


@pytest.mark.parametrize("run_doc, expected", [
    (doc(), ("healthy", [])),
    (doc(findings=[("poor-init", "warning", {}), ("unnormalized-inputs", "warning", {})]), ("healthy", [])),
    (doc(findings=[("dead-relu", "info", {})]), ("healthy", [])),
    (doc(findings=[("loss-plateau", "info", {})]), ("stalled", ["loss-plateau"])),
    (doc(findings=[("dead-relu", "warning", {}), ("vanishing-gradients", "warning", {})]),
     ("stalled", ["dead-relu", "vanishing-gradients"])),
    (doc(findings=[("dead-relu", "warning", {}), ("exploding-gradients", "warning", {})]),
     ("unstable", ["exploding-gradients"])),
    (doc(findings=[("large-update-ratio", "warning", {"direction": "high"})]), ("unstable", ["large-update-ratio"])),
    (doc(findings=[("large-update-ratio", "warning", {"direction": "low"})]), ("stalled", ["large-update-ratio"])),
    (doc(status="diverged", final_loss=None, findings=[("nonfinite", "error", {}), ("exploding-gradients",
                                                                                    "warning", {})]),
     ("diverged", ["nonfinite"])),
    (doc(status="diverged", final_loss=3.0, stopped_by="log-zero", findings=[("log-zero", "error", {})]),
     ("diverged", ["log-zero"])),
    (doc(final_loss=None), ("diverged", [])),  # a completed run whose last loss is not finite
], ids=["clean", "static-only", "info-only", "plateau", "stalled", "unstable-beats-stalled", "ratio-high",
        "ratio-low", "nonfinite", "stopped", "nonfinite-loss"])
def test_classify(run_doc, expected):
    assert classify(run_doc) == expected


def test_every_detector_code_has_a_decision():
    """A new detector must be placed: a class, the update-ratio split, or explicitly not deciding."""
    placed = set(CODE_CLASS) | {"large-update-ratio"} | NOT_DECIDING
    assert set(all_codes()) <= placed
    assert set(UPDATE_RATIO_CLASS) == {"high", "low"}


def test_worst_seed_decides_the_cell_and_its_loss():
    ok = TaskResult("k", True, doc(final_loss=0.2), None)
    boom = TaskResult("k", True, doc(status="diverged", final_loss=None, findings=[("nonfinite", "error", {})]), None)
    died = TaskResult("k", False, None, "the worker process running it died", "died")
    cell = Cell({"optimizer.lr": 1.0}, [seed_run(0, ok), seed_run(1, boom)])
    assert (cell.cls, cell.codes, cell.deciding.seed) == ("diverged", ["nonfinite"], 1)
    assert Cell({}, [seed_run(0, ok), seed_run(1, died)]).cls == "error"
    assert worst(["healthy", "stalled", "unstable"]) == "unstable"


def test_largest_healthy_per_row():
    axes = [Axis("optimizer.lr", (0.01, 0.1, 1.0)), Axis("data.normalize", ("none", "standardize"))]
    classes = {(0.01, "none"): "healthy", (0.1, "none"): "unstable", (1.0, "none"): "diverged",
               (0.01, "standardize"): "healthy", (0.1, "standardize"): "healthy", (1.0, "standardize"): "diverged"}
    cells = []
    for (lr, norm), cls in classes.items():
        findings = {"healthy": [], "unstable": [("loss-divergence", "warning", {})],
                    "diverged": [("nonfinite", "error", {})]}[cls]
        r = TaskResult("k", True, doc(status="diverged" if cls == "diverged" else "completed",
                                      final_loss=None if cls == "diverged" else 0.5, findings=findings), None)
        cells.append(Cell({"optimizer.lr": lr, "data.normalize": norm}, [seed_run(0, r)]))
    m = StabilityMap("c.yaml", axes, cells)
    assert m.largest_healthy("none") == 0.01 and m.largest_healthy("standardize") == 0.1


# ---------------------------------------------------------------- the command


def test_map_json_shape_and_the_seed_case_diverging_at_high_rates(tmp_path):
    result = run(REGRESSION, "--grid", "optimizer.lr=1e-4:1:3log", "--grid", "data.normalize=none,standardize",
                 "--set", "data.normalize_target=standardize", "--steps", "60", "--seeds", "2", "--jobs", "2",
                 "--no-runs", "--format", "json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert set(m) == {"config", "axes", "cells"}
    assert m["axes"] == [{"key": "optimizer.lr", "values": [1e-4, 0.01, 1.0]},
                         {"key": "data.normalize", "values": ["none", "standardize"]}]
    assert [c["values"] for c in m["cells"]][:2] == [{"optimizer.lr": 1e-4, "data.normalize": "none"},
                                                    {"optimizer.lr": 1e-4, "data.normalize": "standardize"}]
    cells = {(c["values"]["optimizer.lr"], c["values"]["data.normalize"]): c for c in m["cells"]}
    for c in m["cells"]:
        assert set(c) == {"values", "class", "final_loss", "codes", "seeds"}
        assert [s["seed"] for s in c["seeds"]] == [0, 1] and all(s["run_dir"] is None for s in c["seeds"])
    assert cells[(1.0, "none")]["class"] == "diverged" and "nonfinite" in cells[(1.0, "none")]["codes"]
    assert cells[(1e-4, "standardize")]["class"] in ("healthy", "stalled")


def test_map_text_grid_reads_without_colour_and_keeps_runs(tmp_path):
    out = tmp_path / "runs"
    result = run(REGRESSION_FIXED, "--grid", "optimizer.lr=0.01,100", "--steps", "40", "--jobs", "1",
                 "--out", out)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "H " in text and "D " in text and "largest healthy" in text and "D diverged:" in text
    (root,) = out.iterdir()
    saved = json.loads((root / "map.json").read_text())
    assert [c["class"] for c in saved["cells"]] == ["healthy", "diverged"]
    for c in saved["cells"]:
        assert (Path(c["seeds"][0]["run_dir"]) / "steps.jsonl").is_file()


def test_killed_worker_leaves_the_map_complete_with_its_cell_marked(tmp_path):
    """A worker killed (SIGKILL) mid-map: its cell is `error`, every other cell has its class."""
    (tmp_path / "killer.py").write_text(KILLS_ITS_PROCESS)
    config = tmp_path / "small.yaml"
    config.write_text(SMALL.replace("ACT", "tanh"))
    result = run(config, "--grid", "model.activation=tanh,killer:act,relu", "--grid", "optimizer.lr=0.01,0.02",
                 "--jobs", "2", "--no-runs", "--format", "json")
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert len(cells) == 6
    for c in cells:
        if c["values"]["model.activation"] == "killer:act":
            assert c["class"] == "error" and "SIGKILL" in c["seeds"][0]["error"]
        else:
            assert c["class"] != "error" and c["final_loss"] is not None


@pytest.mark.parametrize("args, message", [
    (["--grid", "optimizer.lr"], "expected KEY=VALUES"),
    (["--grid", "optimizer.lrr=0.1,1"], "Did you mean 'optimizer.lr'"),
    (["--grid", "optimizer.lr=0.1,-1"], "optimizer.lr=-1"),
    (["--grid", "optimizer.kind=sgd,adamw"], "did you mean 'adam'"),
    (["--grid", "a=1", "--grid", "b=1", "--grid", "c=1"], "one or two"),
    (["--grid", "optimizer.lr=1e-4:1:1000log", "--grid", "optimizer.momentum=0:0.99:1000"], "at most 100000"),
    (["--grid", "optimizer.lr=0.1", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"],
     "cannot reach the Dask scheduler"),
], ids=["syntax", "unknown-key", "invalid-value", "invalid-name", "three-axes", "too-many-runs",
        "unreachable-scheduler"])
def test_bad_map_input_is_a_clear_message_and_exit_2(tmp_path, monkeypatch, args, message):
    if "dask" in args:
        pytest.importorskip("distributed")
        from nnprobe.executor import DaskExecutor

        monkeypatch.setattr(DaskExecutor, "connect_timeout", 1.0)
    result = run(REGRESSION_FIXED, *args, "--no-runs", "--steps", "5")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("nnprobe: error: ")


def test_html_heatmap_is_self_contained_and_deterministic(tmp_path):
    pytest.importorskip("matplotlib")
    pages = []
    for name in ("a.html", "b.html"):
        result = run(REGRESSION_FIXED, "--grid", "optimizer.lr=0.01,100", "--grid", "model.init=he_normal,uniform",
                     "--steps", "20", "--jobs", "1", "--no-runs", "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        pages.append((tmp_path / name).read_text())
    assert pages[0] == pages[1]
    page = pages[0]
    assert page.count("<svg") == 1 and "<script" not in page and "http://" not in page.replace(
        "http://www.w3.org", "")
    assert "optimizer.lr" in page and "model.init" in page and "Largest healthy" in page


def test_map_help():
    result = CliRunner().invoke(cli, ["map", "--help"])
    assert result.exit_code == 0 and "Usage: nnprobe map" in result.stdout and "--grid" in result.stdout

"""nnprobe.runner: reproducible logs, the run directory contract, divergence with the first non-finite
tensor named in computation order, unprobed runs, mini-batches, step statistics, and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnprobe.probes import kernel
from nnprobe.config import validate_config
from nnprobe.data import load_dataset
from nnprobe.errors import RunDirError
from nnprobe.train.runlog import loads
from nnprobe.train.loop import Trainer
from nnprobe.train.run import train

REPO = Path(__file__).resolve().parents[1]

# computation order of docs/log-schema.md, per tensor kind, for a network of `n` layers
FORWARD_KINDS = ("pre-activation", "activation")


def config(**sections):
    raw = {"data": {"source": "affine", "n_samples": 20, "normalize": "standardize",
                    "normalize_target": "standardize"},
           "model": {"hidden": [4], "activation": "tanh", "init": "xavier_normal", "bias_init": "zeros"},
           "optimizer": {"lr": 0.05},
           "training": {"steps": 6}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return validate_config(raw, source="test")


def read_lines(run_dir: Path) -> list[str]:
    return (run_dir / "steps.jsonl").read_text(encoding="utf-8").splitlines()


def records(run_dir: Path) -> list[dict]:
    return [loads(line) for line in read_lines(run_dir)]


# ---------------------------------------------------------------- reproducibility and the run directory


def test_same_config_and_seed_give_byte_identical_logs(tmp_path):
    cfg = config(training={"steps": 5, "batch_size": 7}, loss={"l2": 0.01})
    train(cfg, out_dir=tmp_path / "a", progress=None)
    train(cfg, out_dir=tmp_path / "b", progress=None)
    a = (tmp_path / "a" / "steps.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "steps.jsonl").read_bytes()
    assert len(a.splitlines()) == 1 + 5 + 1
    assert (tmp_path / "a" / "config.yaml").read_bytes() == (tmp_path / "b" / "config.yaml").read_bytes()


def test_a_different_seed_gives_a_different_log(tmp_path):
    train(config(seed=0), out_dir=tmp_path / "a", progress=None)
    train(config(seed=1), out_dir=tmp_path / "b", progress=None)
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert a[1]["loss"] != b[1]["loss"]
    assert a[1]["layers"][0]["W"] != b[1]["layers"][0]["W"]


def test_out_onto_a_non_empty_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        train(config(), out_dir=out, progress=None)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    train(config(), out_dir=tmp_path / "fresh", progress=None)
    with pytest.raises(RunDirError):  # a finished run is never overwritten either
        train(config(), out_dir=tmp_path / "fresh", progress=None)


def test_run_directory_contents(tmp_path):
    result = train(config(), out_dir=tmp_path / "run", progress=None)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "findings.json", "meta.json", "steps.jsonl"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 6 and meta["seed"] == 0
    assert meta["numpy"] == np.__version__
    assert meta["stats"] == ("kernel" if kernel.in_use() else "numpy")
    summary = json.loads((run / "findings.json").read_text())
    assert summary == result.to_json()
    assert summary["status"] == "completed" and summary["steps"] == 6
    recs = records(run)
    assert [r["type"] for r in recs] == ["start"] + ["step"] * 6 + ["end"]
    assert [r["step"] for r in recs[1:-1]] == list(range(6))
    assert recs[-1] == {"type": "end", "status": "completed", "steps": 6, "final_loss": recs[-2]["loss"],
                        "stopped_by": None}
    start = recs[0]
    assert start["total_steps"] == 6
    assert [(l["name"], l["fan_in"], l["units"], l["activation"], l["is_output"]) for l in start["layers"]] == [
        ("dense1", 1, 4, "tanh", False), ("dense2", 4, 1, "identity", True)]


def test_progress_is_called_once_per_step(tmp_path):
    calls = []
    train(config(training={"steps": 4}), out_dir=tmp_path / "run", progress=lambda *a: calls.append(a))
    assert [(c[0], c[1]) for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]


# ---------------------------------------------------------------- divergence


def exploding_config():
    """Seed case 1: integers in [0, 100), y = x + 1, leaky ReLU 1-3-1 from U[0, 1), summed squared error."""
    return validate_config({"data": {"source": "affine", "n_samples": 100}, "loss": {"reduction": "sum"},
                            "optimizer": {"lr": 0.01}, "training": {"steps": 200}}, source="test")


def order_of(origin: dict, n_layers: int) -> int:
    """Position of a `nonfinite` origin in the computation order of docs/log-schema.md."""
    order = [("forward", "input", None)]
    for i in range(1, n_layers + 1):
        order += [("forward", kind, f"dense{i}") for kind in FORWARD_KINDS]
    order.append(("forward", "loss", None))
    for i in range(n_layers, 0, -1):
        order += [("backward", "weight-gradient", f"dense{i}"), ("backward", "bias-gradient", f"dense{i}")]
    for i in range(1, n_layers + 1):
        order += [("update", "weight", f"dense{i}"), ("update", "bias", f"dense{i}")]
    return order.index((origin["pass"], origin["tensor"], origin["layer"]))


def nonfinite_count(stats: dict) -> int:
    return sum(stats.get(k) or 0 for k in ("nan", "posinf", "neginf"))


def test_exploding_regression_diverges_and_names_the_first_nonfinite_tensor(tmp_path):
    result = train(exploding_config(), out_dir=tmp_path / "run", progress=None)
    assert result.status == "diverged" and result.stopped_by == "nonfinite"
    recs = records(tmp_path / "run")
    steps = [r for r in recs if r["type"] == "step"]
    assert result.steps == len(steps) < 200
    assert all(r["nonfinite"] is None for r in steps[:-1])
    last = steps[-1]
    origin = last["nonfinite"]
    assert origin is not None and last["full"] is True
    position = order_of(origin, 2)
    layers = {l["name"]: l for l in last["layers"]}
    # every forward tensor computed before the origin is finite; the origin itself is not
    for name, layer in layers.items():
        for kind, key in zip(FORWARD_KINDS, ("z", "a")):
            here = order_of({"pass": "forward", "tensor": kind, "layer": name}, 2)
            if here < position:
                assert nonfinite_count(layer[key]) == 0, (name, kind)
            elif here == position:
                assert nonfinite_count(layer[key]) > 0, (name, kind)
    if position > order_of({"pass": "forward", "tensor": "loss", "layer": None}, 2):
        assert math.isfinite(last["loss"])
    elif origin["tensor"] == "loss":
        assert not math.isfinite(last["loss"])
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == "diverged"
    assert recs[-1]["stopped_by"] == "nonfinite" and recs[-1]["final_loss"] is None
    codes = [f.code for f in result.findings]
    assert "nonfinite" in codes
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "diverged"


def test_nonfinite_origin_in_the_update_pass(tmp_path):
    """Huge but finite gradients times a huge lr: the first inf is born in the update of dense1's weights."""
    cfg = validate_config({"data": {"source": "affine", "n_samples": 10}, "model": {"hidden": [2]},
                           "optimizer": {"lr": 1e306}, "training": {"steps": 3}}, source="test")
    result = train(cfg, out_dir=tmp_path / "run", progress=None)
    first = next(r for r in records(tmp_path / "run") if r["type"] == "step" and r["nonfinite"])
    assert first["nonfinite"]["pass"] == "update"
    assert math.isfinite(first["loss"]) and math.isfinite(first["grad_norm"])
    assert result.status == "diverged"


# ---------------------------------------------------------------- probes off, schedule, mini-batches


def test_probes_disabled_writes_loss_only_records(tmp_path):
    train(config(probes={"enabled": False}), out_dir=tmp_path / "run", progress=None)
    steps = [r for r in records(tmp_path / "run") if r["type"] == "step"]
    assert len(steps) == 6
    for r in steps:
        assert r["full"] is False and "layers" not in r
        assert r["grad_norm"] is None and r["loss_in"] is None and r["nonfinite"] is None
        assert math.isfinite(r["loss"])


def test_probes_off_and_on_train_the_same_model(tmp_path):
    train(config(probes={"enabled": False}), out_dir=tmp_path / "off", progress=None)
    train(config(), out_dir=tmp_path / "on", progress=None)
    off = [r["loss"] for r in records(tmp_path / "off") if r["type"] == "step"]
    on = [r["loss"] for r in records(tmp_path / "on") if r["type"] == "step"]
    assert off == on


@pytest.mark.parametrize(("steps", "full"), [(7, [0, 3, 6]), (8, [0, 3, 6, 7])])
def test_full_records_every_n_steps_plus_first_and_last(tmp_path, steps, full):
    train(config(training={"steps": steps}, probes={"every": 3}), out_dir=tmp_path / "run", progress=None)
    recs = [r for r in records(tmp_path / "run") if r["type"] == "step"]
    assert [r["step"] for r in recs if r["full"]] == full
    assert all(("layers" in r) == r["full"] for r in recs)


def test_epochs_with_mini_batches_give_the_right_number_of_steps(tmp_path):
    cfg = config(training={"steps": None, "epochs": 2, "batch_size": 6})  # 20 rows: 4 batches per epoch
    result = train(cfg, out_dir=tmp_path / "run", progress=None)
    recs = records(tmp_path / "run")
    assert result.steps == 8 and recs[0]["total_steps"] == 8
    assert [r["step"] for r in recs if r["type"] == "step"] == list(range(8))


def test_mini_batches_cover_each_epoch_once():
    cfg = config(training={"steps": None, "epochs": 2, "batch_size": 6})
    trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(0)))
    batches = trainer.batches()
    for _ in range(2):
        epoch = [next(batches) for _ in range(trainer.batches_per_epoch)]
        assert [len(b) for b in epoch] == [6, 6, 6, 2]
        assert sorted(np.concatenate(epoch).tolist()) == list(range(20))
    unshuffled = Trainer(config(training={"batch_size": 6, "shuffle": False}),
                         load_dataset(cfg.data, cfg.task, np.random.default_rng(0))).batches()
    assert next(unshuffled).tolist() == [0, 1, 2, 3, 4, 5]


def test_full_batch_yields_none():
    cfg = config()
    trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(0)))
    assert next(trainer.batches()) is None and trainer.total_steps == 6


# ---------------------------------------------------------------- what a step record says


def test_step_record_against_an_independent_computation():
    """Loss, gradient norm and update ratio of a plain-SGD step recomputed by hand from the same model."""
    cfg = config(loss={"l2": 0.1})
    trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(0)))
    layers = trainer.model.layers
    W = [l.W.copy() for l in layers]
    b = [l.b.copy() for l in layers]
    x, t = trainer.x, trainer.t
    h = np.tanh(x @ W[0] + b[0])
    out = h @ W[1] + b[1]
    n = x.shape[0]
    loss = float(np.sum((out - t) ** 2)) / n + 0.05 * (np.sum(W[0] ** 2) + np.sum(W[1] ** 2))
    d_out = 2 * (out - t) / n
    gW1, gb1 = h.T @ d_out + 0.1 * W[1], d_out.sum(0)
    dz = (d_out @ W[1].T) * (1 - h**2)
    gW0, gb0 = x.T @ dz + 0.1 * W[0], dz.sum(0)
    grad_norm = math.sqrt(sum(float(np.sum(g**2)) for g in (gW0, gb0, gW1, gb1)))

    record = trainer.step(0, None)
    assert record["loss"] == pytest.approx(loss, rel=1e-12)
    assert record["grad_norm"] == pytest.approx(grad_norm, rel=1e-12)
    st = record["layers"]
    assert st[0]["gW"]["norm"] == pytest.approx(float(np.linalg.norm(gW0)), rel=1e-12)
    assert st[1]["gb"]["norm"] == pytest.approx(float(np.linalg.norm(gb1)), rel=1e-12)
    assert st[0]["W"]["norm"] == pytest.approx(float(np.linalg.norm(W[0])), rel=1e-12)  # before the update
    for i, g in enumerate((gW0, gW1)):
        np.testing.assert_allclose(layers[i].W, W[i] - 0.05 * g, rtol=1e-12)
        expected = float(np.linalg.norm(layers[i].W - W[i]) / np.linalg.norm(W[i]))
        assert st[i]["update_ratio"] == pytest.approx(expected, rel=1e-9)
    assert record["nonfinite"] is None and record["loss_in"] is None


def test_textbook_bce_records_loss_in(tmp_path):
    cfg = validate_config({"data": {"source": "blobs", "n_samples": 30, "n_classes": 2},
                           "model": {"hidden": [4], "activation": "tanh", "output": "sigmoid", "init": "xavier_normal"},
                           "loss": {"kind": "bce"}, "training": {"steps": 2}}, source="test")
    train(cfg, out_dir=tmp_path / "run", progress=None)
    recs = records(tmp_path / "run")
    assert recs[0]["layers"][-1]["units"] == 1
    loss_in = recs[1]["loss_in"]
    assert loss_in["n"] == 30 and 0 < loss_in["min"] <= loss_in["max"] < 1
    assert loss_in["n_zero"] == loss_in["n_one"] == loss_in["n_outside"] == 0
    assert 0 <= recs[1]["accuracy"] <= 1


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_keeps_every_line_and_marks_the_run_interrupted(tmp_path, signum):
    """The log holds up to a batch of records in memory: a stop by signal must still write every one."""
    cfg_path = tmp_path / "long.yaml"
    cfg_path.write_text("data: {source: affine, n_samples: 20, normalize: standardize, normalize_target: standardize}\n"
                        "model: {hidden: [4], activation: tanh, init: xavier_normal}\n"
                        "optimizer: {lr: 0.001}\n"
                        "training: {steps: 100000000}\n", encoding="utf-8")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnprobe", "train", str(cfg_path), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    log = out / "steps.jsonl"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and log.read_bytes().count(b"\n") >= 5:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"interrupted" in stderr
    lines = log.read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]  # every line parses
    assert recs[0]["type"] == "start"
    end = recs[-1]
    assert end["type"] == "end" and end["status"] == "interrupted"
    steps = [r for r in recs if r["type"] == "step"]
    assert end["steps"] == len(steps) >= 4
    assert [r["step"] for r in steps] == list(range(len(steps)))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps"] == len(steps)
    assert meta["interrupted_by"] == signum.name



def test_an_exception_mid_batch_still_writes_every_record_made_before_it(tmp_path, monkeypatch):
    """The log holds healthy records back; a step that raises must not take them with it."""
    inner = Trainer.step

    def failing(self, step, idx):
        if step == 40:
            raise RuntimeError("boom")
        return inner(self, step, idx)

    monkeypatch.setattr(Trainer, "step", failing)
    cfg = config(training={"steps": 100, "batch_size": 7})
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, out_dir=tmp_path / "run", progress=None)
    recs = records(tmp_path / "run")
    assert [r["step"] for r in recs if r["type"] == "step"] == list(range(40))  # a batch of 32 and 8 held
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == "failed" and recs[-1]["steps"] == 40


# ---------------------------------------------------------------- the log's two encoders


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes() or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_value, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("make", [exploding_config, lambda: config(training={"steps": 12, "batch_size": 7})],
                         ids=["diverging", "healthy"])
def test_orjson_and_stdlib_logs_read_back_the_same(tmp_path, monkeypatch, make):
    pytest.importorskip("orjson")
    from nnprobe.train import runlog

    train(make(), out_dir=tmp_path / "fast", progress=None)
    monkeypatch.setattr(runlog, "orjson", None)
    train(make(), out_dir=tmp_path / "stdlib", progress=None)
    fast, slow = records(tmp_path / "fast"), records(tmp_path / "stdlib")
    assert len(fast) == len(slow) > 2
    for a, b in zip(fast[1:-1], slow[1:-1]):  # the start and end records carry timings
        assert same_value(a, b), a["step"]


def test_healthy_step_records_need_no_walk_for_non_finite_values(tmp_path, monkeypatch):
    """A null in orjson's line is a None or a NaN; on a healthy step every null sits under a key that holds
    only None or finite values, so the record is written without the walk that tells them apart."""
    pytest.importorskip("orjson")
    from nnprobe.train import runlog

    walked = []
    inner = runlog._has_nonfinite

    def counting(value):
        if isinstance(value, dict) and "type" in value:
            walked.append(value["type"])
        return inner(value)

    monkeypatch.setattr(runlog, "_has_nonfinite", counting)
    for name, probing in (("every-3", {"every": 3}), ("off", {"enabled": False})):
        cfg = config(model={"hidden": [5, 4], "activation": "relu", "init": "he_normal", "bias_init": "zeros"},
                     training={"steps": 10, "batch_size": 7}, probes=probing)
        train(cfg, out_dir=tmp_path / name, progress=None)
        assert "step" not in walked, name
        assert len(records(tmp_path / name)) == 12

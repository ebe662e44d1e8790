"""dead-relu over windows of batches: a unit is dead when it is 0 for every example it sees over at
least a few hundred examples, which records tell by naming the dead units of each batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import plain_layer, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.diagnose.windows import DeadUnitWindow, window_examples
from nnprobe.probes.statistics import StepProbe, dead_units
from nnprobe.train.run import train

HEALTHY = Path(__file__).resolve().parent / "healthy"
UNITS = 50
LAYERS = [("dense1", 2, UNITS, "relu"), ("dense2", UNITS, 1, "identity")]


def mask(units) -> str:
    return format(sum(1 << u for u in units), "x")


def start(batch: int, n_train: int = 1000) -> dict:
    s = start_record(LAYERS, total_steps=10, name="synthetic")
    s["data"] = {"n_train": n_train, "n_classes": None, "target_std": 1.0}
    s["batch_size"] = batch
    return s


def records(start, dead_sets, with_masks=True):
    out = []
    for step, units in enumerate(dead_sets):
        layer = plain_layer("dense1", dead=len(units))
        if with_masks and units:
            layer["a"]["dead_units"] = mask(units)
        out.append(step_record(start, step, loss=0.5, grad_norm=1.0, layers=[layer, plain_layer("dense2")]))
    return out


# ---------------------------------------------------------------- the probe names the dead units


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_dead_units_mask_matches_a_column_by_column_reference(dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 70)).astype(dtype)
    z[:, [0, 3, 64, 69]] = -np.abs(z[:, [0, 3, 64, 69]])
    z[:, 5] = 0.0  # z <= 0 everywhere: dead
    z[2, 6], z[:, 7] = np.nan, -1.0  # a NaN column is not dead; an all-negative one is
    z[0, 7] = np.nan
    reference = {j for j in range(70) if all(z[i, j] <= 0 for i in range(7))}
    got = int(dead_units(z), 16)
    assert {j for j in range(70) if got >> j & 1} == reference
    assert reference >= {0, 3, 5, 64, 69}


def test_the_step_probe_adds_the_mask_only_when_a_unit_is_dead():
    z = np.array([[1.0, -1.0, 2.0], [0.5, -2.0, -1.0]])
    probe = StepProbe(1)
    probe.forward(0, z, np.maximum(z, 0), "relu", None)
    assert probe.a[0]["dead"] == 1 and probe.a[0]["dead_units"] == "2"
    probe.forward(0, np.abs(z), np.abs(z), "relu", None)
    assert probe.a[0]["dead"] == 0 and "dead_units" not in probe.a[0]


# ---------------------------------------------------------------- the window


def test_window_ands_the_masks_of_its_batches():
    w = DeadUnitWindow(batch=100, examples=300)
    assert w.add(0, {"dead": 3, "dead_units": mask([1, 2, 3])}) is None
    assert w.add(1, {"dead": 2, "dead_units": mask([2, 3])}) is None
    closed = w.add(2, {"dead": 3, "dead_units": mask([0, 2, 3])})
    assert (closed.first, closed.last, closed.records, closed.examples, closed.dead, closed.exact) == (0, 2, 3, 300, 2, True)
    assert w.add(3, {"dead": 0}) is None  # a new window starts


def test_window_without_masks_gives_only_an_upper_bound():
    w = DeadUnitWindow(batch=1, examples=2)
    w.add(0, {"dead": 30})
    closed = w.add(1, {"dead": 32})
    assert closed.dead == 30 and not closed.exact
    one = DeadUnitWindow(batch=500, examples=256).add(0, {"dead": 30})  # one big batch: its count is exact
    assert one.dead == 30 and one.exact


def test_window_covers_the_training_set_when_it_is_smaller():
    assert window_examples(1, 100) == 100 and window_examples(1, 10_000) == 256 and window_examples(1, None) == 256


# ---------------------------------------------------------------- the detector


def test_units_that_take_turns_at_batch_size_one_are_not_dead():
    """Regression: at batch size 1, 32 of 50 units output 0 on each example (different ones on different
    examples) and dead-relu said '32 of 50 units output 0 for all 1 examples ... nothing revives them',
    though over the training set at most 1 unit was dead."""
    rng = np.random.default_rng(0)
    dead_sets = [sorted(rng.choice(UNITS, size=32, replace=False)) for _ in range(3000)]
    s = start(batch=1)
    assert run_one("dead-relu", records(s, dead_sets), s)[0] == []


def test_units_dead_in_every_batch_of_the_windows_are_dead():
    same = list(range(30))
    s = start(batch=1)
    (f,), fired_at = run_one("dead-relu", records(s, [same] * 3000), s)
    assert f.step == 0 and fired_at == 10 * 256 - 1  # 10 windows of 256 examples
    assert "30 of 50 units of dense1 output 0 for all 256 examples of the 256 batches of steps 0-255" in f.message
    assert f.evidence["window_examples"] == 256 and f.evidence["windows"] == 11


def test_counts_without_masks_at_batch_size_one_are_no_evidence():
    s = start(batch=1)
    assert run_one("dead-relu", records(s, [list(range(30))] * 3000, with_masks=False), s)[0] == []


@pytest.mark.parametrize("alive_in_one_batch, fires", [(True, False), (False, True)])
def test_a_unit_alive_in_one_batch_of_the_window_is_not_dead(alive_in_one_batch, fires):
    """Batch 32, windows of 8 batches (256 examples): 25 units dead in all but one batch per window."""
    dead = list(range(25))
    batches = [dead[:-1] if alive_in_one_batch and step % 8 == 3 else dead for step in range(8 * 12)]
    s = start(batch=32)
    found, _ = run_one("dead-relu", records(s, batches), s)
    assert bool(found) is fires


@pytest.mark.parametrize("n_dead, fires", [(24, False), (25, True)])
def test_fraction_edge(n_dead, fires):
    s = start(batch=100)
    found, _ = run_one("dead-relu", records(s, [list(range(n_dead))] * 100 * 12), s)
    assert bool(found) is fires


@pytest.mark.parametrize("min_examples, fires", [(301, False), (300, True)])
def test_min_examples_setting(min_examples, fires):
    """3000 examples of a 10000-example set: ten windows of 300 make the patience, ten of 301 do not fit."""
    s = start(batch=1, n_train=10_000)
    found, _ = run_one("dead-relu", records(s, [list(range(30))] * 3000), s, settings={"min_examples": min_examples})
    assert bool(found) is fires


# ---------------------------------------------------------------- real runs


def test_healthy_relu_at_batch_size_one_has_no_dead_units(tmp_path):
    """Regression: the healthy batch-1 ReLU run got dead-relu from per-example zeros."""
    result = train(load_config(HEALTHY / "relu-batch1-sgd-moons.yaml"), out_dir=tmp_path / "run", progress=None)
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    per_batch = [r["layers"][0]["a"]["dead"] for r in map(json.loads, lines) if r.get("full")]
    assert sum(d >= 16 for d in per_batch) > 100  # half of the 32 units at 0 on many single examples
    assert "dead-relu" not in {f.code for f in result.findings}


def test_units_killed_by_large_steps_at_batch_size_eight_are_found(tmp_path):
    cfg = tmp_path / "dead.yaml"
    cfg.write_text(
        "data: {source: blobs, n_samples: 200, n_features: 2, n_classes: 3, normalize: standardize}\n"
        "model: {hidden: [32], activation: relu, output: softmax, init: he_normal, bias_init: zeros}\n"
        "loss: {kind: cross_entropy, from_logits: true}\n"
        "optimizer: {kind: sgd, lr: 3.0}\n"
        "training: {steps: 600, batch_size: 8}\n")
    result = train(load_config(cfg), out_dir=tmp_path / "run", progress=None)
    (dead,) = [f for f in result.findings if f.code == "dead-relu"]
    assert dead.evidence["batches_at_first"] == 25 and dead.evidence["examples_at_first"] == 200
    assert dead.evidence["peak_dead"] >= 16 and dead.evidence["to_end"] is True


def test_a_log_that_does_not_give_its_batch_size_is_judged_batch_by_batch():
    """A loop of someone else's may not say how many examples a step sees: each batch is a window."""
    s = start(batch=1)
    s["batch_size"], s["data"] = None, {}
    (f,), fired_at = run_one("dead-relu", records(s, [list(range(30))] * 20, with_masks=False), s)
    assert fired_at == 9 and "30 of 50 units of dense1 output 0 for every example of the batch" in f.message

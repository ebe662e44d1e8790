"""loss-divergence at small batch sizes: the moving average is fed means of at least 32 examples, so one
lucky first batch is not the 'best value' a healthy run is later judged against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import MLP_241, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.diagnose.windows import ExampleMeans
from nnprobe.train.run import train

HEALTHY = Path(__file__).resolve().parent / "healthy"


def start(batch: int) -> dict:
    s = start_record(MLP_241, total_steps=10, name="synthetic")
    s["data"] = {"n_train": 200, "n_classes": None, "target_std": 1.0}
    s["batch_size"] = batch
    return s


def noisy(start, n=300, level=0.6, first=None, seed=0):
    losses = list(np.random.default_rng(seed).exponential(level, size=n))
    if first is not None:
        losses[0] = first
    return [step_record(start, s, loss=float(x), grad_norm=1.0, full=False) for s, x in enumerate(losses)]


def test_a_lucky_first_example_is_not_the_best_loss():
    """Regression: at batch size 2 the first batch's loss was 0.049, the moving average of the next steps
    0.6, and loss-divergence said the loss rose to more than 10x its best value."""
    s = start(batch=1)
    assert run_one("loss-divergence", noisy(s, first=0.04), s)[0] == []


def test_the_same_stream_judged_per_step_still_looks_like_a_rise():
    """What the old judgement saw: with min_examples 1 every step is its own value again."""
    s = start(batch=1)
    found, _ = run_one("loss-divergence", noisy(s, first=0.04), s, settings={"min_examples": 1})
    assert found


def test_a_real_divergence_at_batch_size_one_is_still_found():
    st = start(batch=1)
    rising = [step_record(st, 200 + s, loss=50.0 * (1 + s % 3), grad_norm=1.0, full=False) for s in range(200)]
    records = noisy(st, n=200, level=0.5) + rising
    (f,), _ = run_one("loss-divergence", records, st)
    assert f.step >= 200 and f.evidence["level"] > 10 * f.evidence["best"]


@pytest.mark.parametrize("batch, group", [(1, 32), (8, 4), (31, 2), (32, 1), (200, 1)])
def test_steps_per_value(batch, group):
    assert ExampleMeans(batch, 32).size == group


def test_healthy_batch_one_and_two_runs_do_not_diverge(tmp_path):
    for name in ("sigmoid-batch1-sgd-regression", "elu-batch2-sgd-blobs-f32"):
        result = train(load_config(HEALTHY / f"{name}.yaml"), out_dir=tmp_path / name, progress=None)
        assert "loss-divergence" not in {f.code for f in result.findings}, name

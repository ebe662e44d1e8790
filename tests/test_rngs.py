"""One seed derivation: train, the static checks, gradcheck and the bench draw their streams from nnprobe.rngs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from nnprobe.app import start_record_for
from nnprobe.config import validate_config
from nnprobe.rngs import data_rng, run_seeds
from nnprobe.train.run import train

ROOT = Path(__file__).resolve().parent.parent

CFG = {"seed": 11, "data": {"source": "blobs", "n_samples": 40, "n_classes": 2, "validation_fraction": 0.25},
       "model": {"hidden": [4], "output": "softmax", "init": "he_normal"},
       "loss": {"kind": "cross_entropy", "from_logits": True}, "training": {"steps": 2}}


def test_the_static_checks_see_the_data_and_network_train_uses(tmp_path):
    cfg = validate_config(CFG, source="test")
    assert start_record_for(cfg) == train(cfg, tmp_path / "run").start


def test_bench_trains_on_the_data_train_uses(tmp_path):
    """Regression: the bench drew its data from the seed's SeedSequence itself, train from its first child, so
    the bench timed a run on other data than `train` makes of the same config."""
    from bench.steps import StepLoop

    cfg = validate_config(CFG, source="test")
    loop = StepLoop(cfg, tmp_path)
    assert loop.trainer.start_record() == start_record_for(cfg)


def test_the_streams_are_independent_children_of_the_seed():
    seeds = run_seeds(3)
    children = np.random.SeedSequence(3).spawn(3)
    assert [s.spawn_key for s in (seeds.data, seeds.init, seeds.shuffle)] == [c.spawn_key for c in children]
    assert data_rng(3).random() == np.random.default_rng(children[0]).random()


def test_no_other_module_derives_a_stream_from_the_seed():
    """A drift test: SeedSequence appears in nnprobe/rngs.py only (bench and package alike)."""
    offenders = []
    for path in [*(ROOT / "nnprobe").rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        if path.name == "rngs.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Attribute) and n.attr == "SeedSequence" for n in ast.walk(tree)):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []

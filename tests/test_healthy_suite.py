"""Healthy models nobody tuned the detectors on: nothing above info, and no loss-plateau.

tests/healthy/ holds MLPs as the fault literature builds them (deep tanh, sigmoid and ReLU stacks
on circles, moons, blobs, spirals and XOR with label noise, Adam and SGD), across every hidden
activation, every optimizer, batch sizes from 1 to the full set, float32 and float64. Each one
trains to the accuracy its data allows; a finding at warning or above is a false alarm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nnprobe.config import load_config
from nnprobe.findings import at_or_above
from nnprobe.nn.activations import HIDDEN
from nnprobe.train.run import train

HEALTHY = Path(__file__).resolve().parent / "healthy"
CONFIGS = sorted(HEALTHY.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_healthy_config_reports_nothing_above_info_and_no_plateau(path, tmp_path):
    result = train(load_config(path), out_dir=tmp_path / "run", progress=None)
    assert result.status == "completed"
    assert at_or_above(result.findings, "warning") == [], [f.message for f in result.findings]
    assert [f for f in result.findings if f.code == "loss-plateau"] == [], [f.message for f in result.findings]


def test_the_suite_spans_what_the_issue_asks():
    """At least 30 configs; depths up to 20 layers; every activation and optimizer; batch 1 to full; both
    float widths; noisy data sets."""
    configs = [load_config(p) for p in CONFIGS]
    assert len(configs) >= 30
    assert max(len(c.model.hidden) + 1 for c in configs) == 20
    hidden = {c.model.activation for c in configs}
    assert hidden == set(HIDDEN)
    assert {c.optimizer.kind for c in configs} >= {"sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"}
    batches = {c.training.batch_size for c in configs}
    assert 1 in batches and None in batches
    assert {c.model.dtype for c in configs} == {"float32", "float64"}
    noisy = [c for c in configs if c.data.source in ("circles", "moons", "spirals", "xor") and (c.data.noise or 0) >= 0.2]
    assert len(noisy) >= 10

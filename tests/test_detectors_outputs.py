"""nnprobe.diagnose.detectors.outputs: output-loss-mismatch.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import pytest

from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.findings import Finding

from conftest import (
    make_config, only, start_record,
)


# ---------------------------------------------------------------- output-loss-mismatch


def mismatch(layers, loss, data=None) -> list[Finding]:
    start = start_record(layers, loss=loss, data=data)
    return DetectorSuite(make_config(), start).static_findings()


MISMATCHED = [
    ("relu", "bce"), ("identity", "bce"), ("tanh", "bce"), ("softmax", "bce"),
    ("relu", "cross_entropy"), ("identity", "cross_entropy"), ("tanh", "cross_entropy"),
    ("sigmoid", "cross_entropy"),
]


@pytest.mark.parametrize("output, kind", MISMATCHED, ids=lambda x: str(x))
def test_output_loss_mismatch_fires_on_each_wrong_pair(output, kind):
    (f,) = only(mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, output)], {"kind": kind}),
                "output-loss-mismatch")
    assert f.step is None and f.layer == "dense2" and f.severity == "error"
    assert f"model.output {output} into loss.kind {kind}" in f.message
    assert any("loss.from_logits: true" in x for x in f.fixes)


@pytest.mark.parametrize("output, kind", [("sigmoid", "bce"), ("softmax", "cross_entropy"), ("identity", "mse")])
def test_output_loss_mismatch_quiet_on_matching_pairs(output, kind):
    assert only(mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, output)], {"kind": kind}),
                "output-loss-mismatch") == []


def test_softmax_over_one_bce_unit_is_called_constant():
    (f,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 1, "softmax")], {"kind": "bce"})
    assert "constant 1.0" in f.message
    (g,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, "softmax")], {"kind": "bce"})
    assert "constant" not in g.message


def test_softmax_into_bce_suggests_cross_entropy():
    (f,) = mismatch([("dense1", 2, 8, "relu"), ("dense2", 8, 3, "softmax")], {"kind": "bce"})
    assert f.fixes[0].startswith("loss.kind: cross_entropy")


def test_bounded_output_cannot_reach_regression_targets():
    data = {"target_min": 1.0, "target_max": 100.0}
    (f,) = only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "sigmoid")], None, data),
                "output-loss-mismatch")
    assert "[0, 1]" in f.message and "[1, 100]" in f.message and f.fixes[0].startswith("model.output: identity")
    in_range = {"target_min": 0.0, "target_max": 1.0}
    assert only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "sigmoid")], None, in_range),
                "output-loss-mismatch") == []


def test_softmax_over_one_regression_unit_is_constant():
    (f,) = only(mismatch([("dense1", 1, 3, "relu"), ("dense2", 3, 1, "softmax")], None), "output-loss-mismatch")
    assert "constant 1.0" in f.message

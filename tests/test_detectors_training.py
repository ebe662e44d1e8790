"""nnprobe.diagnose.detectors.training: large-update-ratio, loss-divergence and loss-plateau.

Each code: fires on a hand-made pathological stream with the right step, layer and numbers,
stays quiet on a healthy stream, and flips exactly at each threshold (just below / just above).
The records come from the one factory in conftest.py, which follows docs/log-schema.md.
"""

from __future__ import annotations

import math

import pytest

from conftest import (
    healthy_loss, healthy_stream, run_one, start_record, step_record,
)


# ---------------------------------------------------------------- large-update-ratio


def ratio_records(start: dict, ratio: float, n: int, layer: str = "dense1", loss=lambda s: 0.5) -> list[dict]:
    return [step_record(start, s, loss=loss(s), layers={layer: {"update_ratio": ratio}}) for s in range(n)]


def test_large_update_ratio_too_high_suggests_an_lr_from_the_ratio():
    start = start_record(optimizer={"lr": 0.5})
    (f,), fired_at = run_one("large-update-ratio", ratio_records(start, 0.5, 30), start)
    assert fired_at == 20 and f.step == 0 and f.layer == "dense1"
    assert "dense1 update ratio ||dW||/||W|| was above 0.1 from step 0 to the end" in f.message
    assert "geometric mean 0.5" in f.message and "optimizer.lr 0.5 is too high" in f.message
    assert f.fixes[0].startswith("optimizer.lr: 0.001 ")


def test_large_update_ratio_too_low():
    start = start_record(optimizer={"lr": 1e-10})
    (f,), _ = run_one("large-update-ratio", ratio_records(start, 1e-12, 30), start)
    assert "was below 1e-07" in f.message and "too low" in f.message
    assert f.fixes[0].startswith("optimizer.lr: 1.0e-01 ") or f.fixes[0].startswith("optimizer.lr: 0.1 ")
    assert f.evidence["suggested_lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("ratio, fires", [(0.099, False), (0.101, True)])
def test_large_update_ratio_high_edge(ratio, fires):
    start = start_record()
    assert bool(run_one("large-update-ratio", ratio_records(start, ratio, 25), start)[0]) is fires


@pytest.mark.parametrize("ratio, fires", [(1.01e-7, False), (0.99e-7, True)])
def test_large_update_ratio_low_edge(ratio, fires):
    start = start_record()
    assert bool(run_one("large-update-ratio", ratio_records(start, ratio, 25), start)[0]) is fires


@pytest.mark.parametrize("n, fires", [(9, False), (10, True)])
def test_large_update_ratio_patience_edge(n, fires):
    start = start_record()
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 0.5 if 30 <= s < 30 + n else 1e-3}})
            for s in range(60)]
    found, _ = run_one("large-update-ratio", recs, start)
    assert bool(found) is fires
    if fires:
        assert found[0].step == 30 and "from step 30 to step 39" in found[0].message


@pytest.mark.parametrize("n, fires", [(20, False), (21, True)])
def test_large_update_ratio_warmup_edge(n, fires):
    """A run of high ratios from step 0 must reach past step 20 (steps 0..20 = 21 records)."""
    start = start_record()
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 0.5 if s < n else 1e-3}}) for s in range(60)]
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


def test_large_update_ratio_target_override_changes_the_suggestion():
    start = start_record(optimizer={"lr": 0.5})
    (f,), _ = run_one("large-update-ratio", ratio_records(start, 0.5, 25), start, settings={"target": 1e-2})
    assert f.evidence["suggested_lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("final, fires", [(1.01e-3, True), (0.99e-3, False)])
def test_large_update_ratio_low_not_when_converged(final, fires):
    start = start_record()
    recs = ratio_records(start, 1e-9, 25, loss=lambda s: 1.0 if s == 0 else final)
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


@pytest.mark.parametrize("rms, fires", [(0.99e-7, False), (1.01e-7, True)])
def test_large_update_ratio_low_needs_a_gradient(rms, fires):
    """A tiny update from a ~zero gradient (a dead layer) is not a learning rate that is too low."""
    start = start_record(optimizer={"lr": 1e-10})
    recs = [step_record(start, s, layers={"dense1": {"update_ratio": 1e-12, "gW": {"norm": rms * math.sqrt(3)}}})
            for s in range(25)]
    assert bool(run_one("large-update-ratio", recs, start)[0]) is fires


def test_large_update_ratio_early_transient_is_not_reported():
    start = start_record()
    recs = [step_record(start, s, layers={"dense2": {"update_ratio": 0.5 if s < 15 else 1e-3}}) for s in range(100)]
    assert run_one("large-update-ratio", recs, start)[0] == []


# ---------------------------------------------------------------- loss-divergence


def diverging(start: dict, rise_at: int, n: int, to: float = 50.0) -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s) if s < rise_at else to, full=False) for s in range(n)]


def test_loss_divergence_fires_when_the_loss_climbs_far_above_its_best():
    start = start_record()
    (f,), fired_at = run_one("loss-divergence", diverging(start, 200, 260), start)
    assert fired_at == f.step and 200 <= f.step <= 205 and f.layer is None
    assert "more than 10x its best" in f.message and "peaked at 50" in f.message and "to the end" in f.message


def test_loss_divergence_quiet_on_minibatch_noise():
    start = start_record()
    recs = [step_record(start, s, loss=healthy_loss(s) * (0.3 if s % 7 == 0 else 1.0 + 0.5 * (s % 3)), full=False)
            for s in range(300)]
    assert run_one("loss-divergence", recs, start)[0] == []


def flat_then(start: dict, level: float, n: int = 60, after: int = 30) -> list[dict]:
    """Loss 1.0 then exactly `level` x 1.0 from step `after` on (smoothing 1 makes the average the raw loss)."""
    return [step_record(start, s, loss=1.0 if s < after else level, full=False) for s in range(n)]


@pytest.mark.parametrize("level, fires", [(9.9, False), (10.1, True)])
def test_loss_divergence_factor_edge(level, fires):
    start = start_record()
    found, _ = run_one("loss-divergence", flat_then(start, level), start, settings={"smoothing": 1.0})
    assert bool(found) is fires


@pytest.mark.parametrize("warmup, fires", [(31, False), (30, True)])
def test_loss_divergence_warmup_edge(warmup, fires):
    start = start_record()
    recs = flat_then(start, 20.0, n=31)
    found, _ = run_one("loss-divergence", recs, start, settings={"smoothing": 1.0, "warmup": warmup})
    assert bool(found) is fires


def test_loss_divergence_smoothing_damps_a_single_spike():
    start = start_record()
    recs = [step_record(start, s, loss=30.0 if s == 50 else 1.0, full=False) for s in range(80)]
    assert run_one("loss-divergence", recs, start)[0] == []
    assert len(run_one("loss-divergence", recs, start, settings={"smoothing": 1.0})[0]) == 1


@pytest.mark.parametrize("best, fires", [(1.1e-3, True), (0.9e-3, False)])
def test_loss_divergence_min_rise_edge(best, fires):
    """Rise from `best` to 10.5x best must exceed 1% of the first loss (1.0): 9.5 x best > 0.01."""
    start = start_record()
    recs = [step_record(start, s, loss=1.0 if s == 0 else (best if s < 40 else 10.5 * best), full=False)
            for s in range(60)]
    assert bool(run_one("loss-divergence", recs, start, settings={"smoothing": 1.0})[0]) is fires


# ---------------------------------------------------------------- loss-plateau


def plateau(start: dict, n: int, level: float = 1.0, first: float = 1.1, drift: float = 0.0) -> list[dict]:
    return [step_record(start, s, loss=first if s == 0 else level * (1 - drift) ** (s // 100), full=False)
            for s in range(n)]


def test_loss_plateau_is_info_and_says_how_long():
    start = start_record()
    (f,), fired_at = run_one("loss-plateau", plateau(start, 500), start)
    assert f.severity == "info" and f.step == 100 and fired_at == 199
    assert "did not improve at all between step 100 and step 199" in f.message
    assert "4 window(s) of 100 steps" in f.message and "(to the end)" in f.message


@pytest.mark.parametrize("drift, fires", [(0.0011, False), (0.0009, True)])
def test_loss_plateau_min_improvement_edge(drift, fires):
    start = start_record()
    assert bool(run_one("loss-plateau", plateau(start, 300, drift=drift), start)[0]) is fires


@pytest.mark.parametrize("level, fires", [(0.099, False), (0.101, True)])
def test_loss_plateau_min_fraction_edge(level, fires):
    start = start_record()
    assert bool(run_one("loss-plateau", plateau(start, 300, level=level, first=1.0), start)[0]) is fires


def test_loss_plateau_window_override():
    start = start_record()
    (f,), _ = run_one("loss-plateau", plateau(start, 300), start, settings={"window": 50})
    assert f.step == 50 and "of 50 steps" in f.message


def test_loss_plateau_quiet_while_learning():
    start = start_record()
    assert run_one("loss-plateau", healthy_stream(start, 400), start)[0] == []

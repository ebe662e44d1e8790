"""loss-plateau means stuck (the loss never left its first value, or sits at the chance-level loss),
not converged to the noise floor of noisy data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import MLP_241, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.diagnose.detectors._progress import LossLevel, chance_loss
from nnprobe.train.run import train

HEALTHY = Path(__file__).resolve().parent / "healthy"
CLASSIFIER = [("dense1", 2, 8, "relu"), ("dense2", 8, 2, "softmax")]


def classifier_start(kind="cross_entropy", classes=2, units=2, reduction="mean", batch=None):
    s = start_record([CLASSIFIER[0], ("dense2", 8, units, "softmax")], task="classification", total_steps=10,
                     name="synthetic")
    s["data"] = {"n_train": 200, "n_classes": classes, "target_std": None}
    s["loss"].update(kind=kind, reduction=reduction)
    s["batch_size"] = batch
    return s


def regression_start(data: dict) -> dict:
    s = start_record(MLP_241, total_steps=10, name="synthetic")
    s["data"] = data
    return s


def curve(start: dict, first: float, level: float, n: int = 400) -> list[dict]:
    """Falls from `first` to `level` over 50 steps, then stays there."""
    return [step_record(start, s, loss=first + (level - first) * min(s, 50) / 50, grad_norm=1.0, layers=[])
            for s in range(n)]


@pytest.mark.parametrize("kind, classes, units, expected", [
    ("cross_entropy", 3, 3, math.log(3)),
    ("bce", 2, 1, math.log(2)),
    ("bce", 4, 4, 4 * -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))),
], ids=str)
def test_chance_loss_is_the_loss_of_the_best_constant_guess(kind, classes, units, expected):
    assert chance_loss(classifier_start(kind, classes, units)) == pytest.approx(expected, rel=1e-12)


def test_chance_loss_of_mse_is_the_target_variance_and_sum_scales_by_the_batch():
    assert chance_loss(regression_start({"n_train": 100, "n_classes": None, "target_std": 2.0})) == 4.0
    assert chance_loss(classifier_start(reduction="sum", batch=32)) == pytest.approx(32 * math.log(2))
    assert chance_loss(classifier_start(kind="mse")) is None  # mse on class labels: not known


def test_stuck_is_near_the_lower_of_first_and_chance():
    level = LossLevel(classifier_start())
    level.update(1.5)  # a bad init starts above chance (ln 2)
    assert level.reference == pytest.approx(math.log(2))
    assert level.stuck(0.65, 0.9) and not level.stuck(0.6, 0.9)


def test_a_loss_at_the_noise_floor_is_not_a_plateau():
    """Regression: a classifier on noisy data falling from ln 2 to 0.40 and staying there (the noise floor,
    accuracy ~0.82) got loss-plateau at every healthy run."""
    start = classifier_start()
    assert run_one("loss-plateau", curve(start, math.log(2), 0.40), start)[0] == []


def test_a_loss_stuck_at_chance_is_a_plateau_and_says_so():
    start = classifier_start()
    (f,), _ = run_one("loss-plateau", curve(start, 0.70, math.log(2)), start)
    assert f.step == 100 and "stuck at 0.693 (100% of the chance-level loss 0.693, 99% of the first loss 0.7)" in f.message
    assert f.evidence["chance_loss"] == pytest.approx(math.log(2))


@pytest.mark.parametrize("fraction, fires", [(0.899, False), (0.901, True)])
def test_stuck_edge(fraction, fires):
    start = classifier_start()
    found, _ = run_one("loss-plateau", curve(start, math.log(2), fraction * math.log(2)), start)
    assert bool(found) is fires


def test_a_loss_that_never_left_its_first_value_is_stuck_without_a_chance_level():
    start = regression_start({"n_train": 100, "n_classes": None, "target_std": None})  # no chance level known
    assert run_one("loss-plateau", curve(start, 2.0, 1.95), start)[0]
    assert run_one("loss-plateau", curve(start, 2.0, 1.0), start)[0] == []


def test_healthy_noisy_runs_at_their_noise_floor_have_no_plateau(tmp_path):
    """Regression: both runs reach their data's noise floor and got loss-plateau (info) before."""
    for name in ("sigmoid-3-adam-moons", "tanh-regression-adam-noisy"):
        result = train(load_config(HEALTHY / f"{name}.yaml"), out_dir=tmp_path / name, progress=None)
        assert "loss-plateau" not in {f.code for f in result.findings}, name

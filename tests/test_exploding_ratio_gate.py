"""exploding-gradients' first/last ratio rule (AUTOTRAINER's |g_first| / |g_last| > 70): only while
training is not converging, in most records of a window, and the message says how often it held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import plain_layer, run_one, start_record, step_record
from nnprobe.config import load_config
from nnprobe.train.run import train

HEALTHY = Path(__file__).resolve().parent / "healthy"
LAYERS = [("dense1", 2, 4, "tanh"), ("dense2", 4, 4, "tanh"), ("dense3", 4, 1, "identity")]


def start() -> dict:
    return start_record(LAYERS, total_steps=10, name="synthetic")


def stream(start, above, losses, last_norm=0.01):
    """Full records whose dense1/dense3 gradient-norm ratio is 100 where `above` says so, else 10."""
    out = []
    for step, (up, loss) in enumerate(zip(above, losses)):
        ratio = 100.0 if up else 10.0
        layers = [plain_layer("dense1", grad=ratio * last_norm), plain_layer("dense2", grad=0.1),
                  plain_layer("dense3", grad=last_norm)]
        out.append(step_record(start, step, loss=loss, grad_norm=1.0, layers=layers))
    return out


def test_deep_tanh_adam_that_learns_is_not_exploding(tmp_path):
    """Regression: a 20-layer tanh net trained with Adam, which reaches 95% on noisy moons, had its first
    layer gradient above 70x the output layer's in 3 consecutive records and got an exploding-gradients
    warning that promised weights reaching inf; they never did."""
    result = train(load_config(HEALTHY / "tanh-20-adam-moons-f32.yaml"), out_dir=tmp_path / "run", progress=None)
    records = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    ratios = [r["layers"][0]["gW"]["norm"] / r["layers"][-1]["gW"]["norm"] for r in records if r.get("full")]
    assert sum(r > 70 for r in ratios) >= 3  # the ratio the old rule saw is still there
    assert "exploding-gradients" not in {f.code for f in result.findings}


def test_ratio_in_most_of_a_window_while_the_loss_is_stuck_fires_and_says_how_often():
    s = start()  # mse on standardized targets: the chance-level loss is 1.0
    above = [i >= 10 for i in range(60)]
    (f,), fired_at = run_one("exploding-gradients", stream(s, above, [1.0] * 60), s)
    assert fired_at == 22 and f.step == 20  # steps 1-20 hold 11 above of 20; then patience 3 (20, 21, 22)
    assert "was above 70 in 11 of the 20 full records from step 1 to step 20" in f.message
    assert "in 50 of all 60 full records of the run" in f.message
    assert "100% of the chance-level loss 1" in f.message
    assert f.evidence["ratio"]["window_above"] == 11 and f.evidence["ratio"]["records_above"] == 50


def test_bursts_above_the_ratio_among_many_records_below_it_are_not_exploding():
    """Regression: three consecutive records above 70 were enough, although 7 of every 10 were below it
    (the message then said 'stayed above 70 from step 386 to step 1769')."""
    above = [i % 10 < 3 for i in range(200)]
    s = start()
    assert run_one("exploding-gradients", stream(s, above, [1.0] * 200), s)[0] == []


@pytest.mark.parametrize("n_above, fires", [(10, False), (11, True)])
def test_share_edge(n_above, fires):
    above = [False] * (20 - n_above) + [True] * n_above
    s = start()
    records = stream(s, above * 3, [1.0] * 60)  # the same pattern three times: every window holds n_above
    found, _ = run_one("exploding-gradients", records, s)
    assert bool(found) is fires


@pytest.mark.parametrize("level, fires", [(0.89, False), (0.9, True)])
def test_stuck_edge(level, fires):
    """The window's median loss against 0.9 of the lower of the first loss (1.0) and chance (1.0)."""
    losses = [1.0] + [level] * 59
    s = start()
    found, _ = run_one("exploding-gradients", stream(s, [True] * 60, losses), s)
    assert bool(found) is fires


def test_the_rule_waits_for_a_full_window():
    s = start()
    found, _ = run_one("exploding-gradients", stream(s, [True] * 19, [1.0] * 19), s)
    assert found == []

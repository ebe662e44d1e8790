"""nnprobe.torch.stats: the on-device statistics against nnprobe's NumPy statistics and hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnprobe.probes import statistics as host  # noqa: E402
from nnprobe.torch import stats  # noqa: E402
from nnprobe.torch.layers import SATURATION  # noqa: E402

REL = 1e-5


def _close(got: dict, want: dict, keys) -> None:
    for key in keys:
        g, w = got[key], want[key]
        if isinstance(w, int) and not isinstance(w, bool):
            assert g == w, key
        else:
            assert g == pytest.approx(w, rel=REL, abs=1e-6), key


def _through_batch(parts, finish):
    out = {}
    batch = stats.Batch()
    batch.add(parts, lambda v: out.update(value=finish(v)))
    batch.resolve()
    return out["value"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_forward_statistics_match_numpy(dtype, activation):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 10, generator=g, dtype=dtype) * 4
    z[:, 3] = -z[:, 3].abs()  # a unit <= 0 for every example: one dead unit
    a = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation](z)
    sat = SATURATION.get(activation)
    zd = _through_batch(stats.forward_parts(z, "z", -1, sat), lambda v: stats.forward_dict(v, "z", z, sat))
    want_z, dead = host.preactivation_stats(z.numpy(), sat)
    _close(zd, want_z, ["mean", "std", "min", "max", "nan", "posinf", "neginf"])
    assert zd["sat_frac"] == (None if sat is None else pytest.approx(want_z["sat_frac"]))
    zv = stats.transfer(stats.forward_parts(z, "z", -1, sat))
    assert stats.dead_units(zv) == dead == int((z.numpy().max(axis=0) <= 0).sum()) >= 1
    ad = _through_batch(stats.forward_parts(a, "a", -1, None), lambda v: stats.forward_dict(v, "a", a, None, dead=dead))
    want_a = host.activation_stats(a.numpy(), dead)
    _close(ad, want_a, ["mean", "std", "min", "max", "zero_frac", "dead"])


def test_dead_units_of_a_convolution_are_counted_per_channel():
    """Channel 1 is <= 0 at every example and position; channel 0 is positive at one position only."""
    z = -torch.ones(2, 3, 4, 4)
    z[1, 0, 2, 2] = 0.5
    z[:, 2] = 1.0
    v = stats.transfer(stats.forward_parts(z, "z", 1, None))
    assert stats.dead_units(v) == 1


def test_nonfinite_tensor_gets_exact_counts_and_finite_moments():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), -float("inf")], [3.0, 0.0]])
    d = _through_batch(stats.forward_parts(x, "z", -1, None), lambda v: stats.forward_dict(v, "z", x, None))
    assert (d["nan"], d["posinf"], d["neginf"]) == (1, 1, 1)
    assert d["mean"] == pytest.approx(4.0 / 3.0)
    assert (d["min"], d["max"]) == (0.0, 3.0)


def test_variance_keeps_its_digits_when_the_mean_dominates():
    """The moments are summed about the first entry: std 1e-3 around a mean of 1e4 in float32."""
    g = torch.Generator().manual_seed(3)
    x = (1e4 + 1e-3 * torch.randn(4096, generator=g, dtype=torch.float64)).to(torch.float32)
    d = _through_batch(stats.forward_parts(x, "a", -1, None), lambda v: stats.forward_dict(v, "a", x, None))
    ref = x.double()
    assert d["std"] == pytest.approx(ref.std(correction=0).item(), rel=1e-3)
    assert d["mean"] == pytest.approx(ref.mean().item(), rel=1e-7)


def test_gradient_weight_and_bias_statistics_match_numpy():
    g = torch.Generator().manual_seed(2)
    gw = torch.randn(7, 5, generator=g)
    gw[0, 0] = 0.0
    w = torch.randn(7, 5, generator=g)
    b = torch.randn(7, generator=g)
    gd = _through_batch(stats.gradient_parts(gw, True),
                        lambda v: stats.gradient_dict(v, gw, gw.norm().item(), gw.abs().max().item(), True))
    _close(gd, host.gradient_stats(gw.numpy(), True), ["norm", "maxabs", "nonfinite", "zero_frac"])
    wd = _through_batch(stats.weight_parts(w, True), lambda v: stats.weight_dict(v, w, w.norm().item()))
    _close(wd, host.weight_stats(w.numpy()), ["norm", "mean", "std", "min", "max", "pos_frac", "nonfinite"])
    wn = _through_batch(stats.weight_parts(w, False), lambda v: stats.weight_dict(v, w, w.norm().item()))
    assert set(wn) == {"norm", "nonfinite"}
    bd = _through_batch(stats.bias_parts(b), lambda v: stats.bias_dict(v, b, b.norm().item()))
    _close(bd, host.bias_stats(b.numpy()), ["norm", "mean"])


def test_nonfinite_gradient_counts_its_bad_entries():
    gw = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    gd = _through_batch(stats.gradient_parts(gw, True),
                        lambda v: stats.gradient_dict(v, gw, gw.norm().item(), math.nan, True))
    assert gd["nonfinite"] == 2
    assert gd["norm"] == pytest.approx(math.sqrt(5.0))


def test_probabilities_fed_to_a_log_are_counted_by_hand():
    p = torch.tensor([[0.0, 0.5], [1.0, 1.0], [-0.1, 2.0], [float("nan"), 0.25]])
    d = _through_batch(stats.probability_parts(p), lambda v: stats.probability_dict(v, p))
    assert d["n"] == 8 and (d["n_zero"], d["n_one"], d["n_outside"]) == (1, 2, 2)  # NaN is none of them


def test_one_batch_moves_every_scalar_in_one_transfer_in_order(monkeypatch):
    """Batch.resolve stacks the queued scalars by dtype, concatenates them and calls .tolist() once."""
    calls = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(1) or real(self))
    batch = stats.Batch()
    got = []
    for i in range(5):  # float32, int64 and float64 scalars interleaved
        batch.add([torch.tensor(float(i)), torch.tensor(i * 10), torch.tensor(i + 0.5, dtype=torch.float64)], got.append)
    head = batch.resolve([torch.tensor(9.0)])
    assert calls == [1]
    assert head == [9.0] and got == [[float(i), float(i * 10), i + 0.5] for i in range(5)]
    np.testing.assert_equal(len(batch.items), 0)

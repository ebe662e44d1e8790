"""nnprobe.losses: dL/dz against central finite differences for every kind x reduction x from_logits x
output activation (the mismatched pairs included), hand-computed values, the textbook NaN, and loss_in."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

from nnprobe.nn.activations import OUTPUT, Sigmoid, Softmax, output_activation
from nnprobe.nn.losses import Loss, one_hot
from nnprobe.probes.records import loss_record
from nnprobe.probes.statistics import probability_stats

RTOL = 1e-6
H = 1e-5
N = 5  # batch


def z_for(kind: str, from_logits: bool, output: str, units: int, rng) -> np.ndarray:
    """Pre-activations for which every textbook log argument lies in (0, 1) (and the relu is not at its kink)."""
    if kind == "mse" or from_logits or output in ("sigmoid", "softmax"):
        z = rng.uniform(-2, 2, size=(N, units))
        if output == "relu":
            z = np.where(np.abs(z) < 0.05, 0.5, z)
        return z
    if output == "tanh":
        return rng.uniform(0.1, 1.5, size=(N, units))  # a in (0.1, 0.9)
    return rng.uniform(0.05, 0.95, size=(N, units))  # identity / relu: a = z


def targets_for(kind: str, units: int, rng) -> np.ndarray:
    if kind == "mse":
        return rng.standard_normal((N, units))
    if kind == "bce":
        return rng.integers(0, 2, size=(N, units)).astype(np.float64)
    return one_hot(rng.integers(0, units, size=N), units, np.float64)


def cases():
    for kind, reduction, output in itertools.product(("mse", "bce", "cross_entropy"), ("mean", "sum"), sorted(OUTPUT)):
        for from_logits in ((False,) if kind == "mse" else (False, True)):
            for epsilon in ((0.0,) if kind == "mse" or from_logits else (0.0, 1e-3)):
                yield kind, reduction, from_logits, output, epsilon


CASES = list(cases())
IDS = [f"{k}-{r}-{'logits' if fl else 'textbook'}-{o}-eps{e:g}" for k, r, fl, o, e in CASES]


def numeric_grad_z(loss: Loss, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += H
        zm[idx] -= H
        fp = loss(zp, loss.output.forward(zp), t).value
        fm = loss(zm, loss.output.forward(zm), t).value
        out[idx] = (fp - fm) / (2 * H)
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-7)))


@pytest.mark.parametrize(("kind", "reduction", "from_logits", "output", "epsilon"), CASES, ids=IDS)
def test_grad_z_matches_central_differences(kind, reduction, from_logits, output, epsilon):
    rng = np.random.default_rng(zlib.crc32(f"{kind}{reduction}{from_logits}{output}{epsilon}".encode()))
    units = 3
    z = z_for(kind, from_logits, output, units, rng)
    t = targets_for(kind, units, rng)
    loss = Loss(kind, reduction=reduction, from_logits=from_logits, epsilon=epsilon, output=output_activation(output))
    result = loss(z, loss.output.forward(z), t)
    assert math.isfinite(result.value)
    assert result.grad_z.shape == z.shape
    assert rel_err(result.grad_z, numeric_grad_z(loss, z, t)) < RTOL


@pytest.mark.parametrize("from_logits", [False, True], ids=["textbook", "logits"])
def test_single_unit_sigmoid_bce_gradient(from_logits):
    rng = np.random.default_rng(7)
    z = rng.uniform(-3, 3, size=(N, 1))
    t = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    loss = Loss("bce", from_logits=from_logits, output=Sigmoid())
    result = loss(z, loss.output.forward(z), t)
    assert rel_err(result.grad_z, numeric_grad_z(loss, z, t)) < RTOL
    # the textbook gradient of sigmoid + bce collapses to (a - t) / N
    np.testing.assert_allclose(result.grad_z, (Sigmoid().forward(z) - t) / N, rtol=1e-12)


# ---------------------------------------------------------------- hand-computed values


def identity_loss(kind, **kw):
    return Loss(kind, output=output_activation("identity"), **kw)


def test_bce_of_a_single_confident_prediction():
    loss = identity_loss("bce")
    a = np.array([[0.8]])
    assert loss(a, a, np.array([[1.0]])).value == pytest.approx(-math.log(0.8), rel=1e-15)
    assert loss(a, a, np.array([[0.0]])).value == pytest.approx(-math.log(0.2), rel=1e-14)


def test_bce_epsilon_goes_inside_each_log():
    loss = identity_loss("bce", epsilon=0.01)
    a = np.array([[0.8]])
    assert loss(a, a, np.array([[1.0]])).value == pytest.approx(-math.log(0.81), rel=1e-15)
    assert loss(a, a, np.array([[0.0]])).value == pytest.approx(-math.log(0.21), rel=1e-14)


def test_cross_entropy_takes_the_log_of_the_labelled_class():
    loss = identity_loss("cross_entropy")
    a = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    t = one_hot(np.array([1, 0]), 3, np.float64)
    expected = (-math.log(0.7) - math.log(0.5)) / 2
    assert loss(a, a, t).value == pytest.approx(expected, rel=1e-15)


def test_mse_sums_over_units_and_averages_over_the_batch():
    loss = identity_loss("mse")
    a = np.array([[1.0, 2.0], [0.0, 3.0]])
    t = np.zeros((2, 2))
    result = loss(a, a, t)
    assert result.value == (1 + 4 + 9) / 2
    np.testing.assert_array_equal(result.grad_z, 2 * a / 2)
    assert result.log_input is None


KIND_FORMS = [("mse", False), ("bce", False), ("bce", True), ("cross_entropy", False), ("cross_entropy", True)]
KIND_FORM_IDS = [f"{k}-{'logits' if fl else 'textbook'}" for k, fl in KIND_FORMS]


@pytest.mark.parametrize(("kind", "from_logits"), KIND_FORMS, ids=KIND_FORM_IDS)
def test_sum_is_batch_size_times_mean(kind, from_logits):
    rng = np.random.default_rng(11)
    z = rng.uniform(-2, 2, size=(N, 3))
    t = targets_for(kind, 3, rng)
    out = "softmax" if kind == "cross_entropy" else "sigmoid"
    mean = Loss(kind, reduction="mean", from_logits=from_logits, output=output_activation(out))
    total = Loss(kind, reduction="sum", from_logits=from_logits, output=output_activation(out))
    a = mean.output.forward(z)
    rm, rs = mean(z, a, t), total(z, a, t)
    assert rs.value == pytest.approx(N * rm.value, rel=1e-14)
    np.testing.assert_allclose(rs.grad_z, N * rm.grad_z, rtol=1e-14)


# ---------------------------------------------------------------- from_logits against the textbook form


def test_from_logits_bce_equals_textbook_sigmoid_bce():
    rng = np.random.default_rng(3)
    z = rng.uniform(-8, 8, size=(N, 2))
    t = rng.integers(0, 2, size=(N, 2)).astype(np.float64)
    a = Sigmoid().forward(z)
    fused = Loss("bce", from_logits=True, output=Sigmoid())(z, a, t)
    text = Loss("bce", from_logits=False, output=Sigmoid())(z, a, t)
    assert fused.value == pytest.approx(text.value, rel=1e-12)
    np.testing.assert_allclose(fused.grad_z, text.grad_z, rtol=1e-9, atol=1e-15)
    assert fused.log_input is None and text.log_input is not None


def test_from_logits_cross_entropy_equals_textbook_softmax_cross_entropy():
    rng = np.random.default_rng(4)
    z = rng.uniform(-8, 8, size=(N, 4))
    t = one_hot(rng.integers(0, 4, size=N), 4, np.float64)
    a = Softmax().forward(z)
    fused = Loss("cross_entropy", from_logits=True, output=Softmax())(z, a, t)
    text = Loss("cross_entropy", from_logits=False, output=Softmax())(z, a, t)
    assert fused.value == pytest.approx(text.value, rel=1e-12)
    np.testing.assert_allclose(fused.grad_z, text.grad_z, rtol=1e-9, atol=1e-15)


def test_from_logits_cross_entropy_counts_log_sum_exp_once_per_example():
    """Regression: the fused form broadcast logsumexp over every unit, so its value was k times too large
    in the logsumexp term (26.2 instead of 4.9 for 4 classes) while its gradient was right."""
    loss = Loss("cross_entropy", from_logits=True, reduction="sum", output=Softmax())
    z = np.zeros((2, 3))
    t = one_hot(np.array([0, 2]), 3, np.float64)
    assert loss(z, Softmax().forward(z), t).value == pytest.approx(2 * math.log(3), rel=1e-15)
    z = np.array([[2.0, 0.0, -1.0]])
    expected = math.log(math.exp(2) + 1 + math.exp(-1)) - 0.0
    assert loss(z, Softmax().forward(z), one_hot(np.array([1]), 3, np.float64)).value == pytest.approx(expected, rel=1e-15)


def test_from_logits_bce_hand_computed():
    loss = Loss("bce", from_logits=True, output=Sigmoid())
    z = np.array([[0.0], [2.0]])
    t = np.array([[1.0], [0.0]])
    expected = (math.log(2) + math.log1p(math.exp(2))) / 2
    assert loss(z, Sigmoid().forward(z), t).value == pytest.approx(expected, rel=1e-15)


def test_textbook_bce_on_an_output_of_exactly_one_is_nan():
    """0 * log(0) = NaN, as hand-written code computes it; the fused form stays finite (seed case 2)."""
    z = np.array([[40.0]])
    a = Sigmoid().forward(z)
    assert a[0, 0] == 1.0
    t = np.array([[1.0]])
    with np.errstate(all="ignore"):
        loss = Loss("bce", epsilon=0.0, output=Sigmoid())
        text = loss(z, a, t)
    assert math.isnan(text.value)
    assert loss_in(loss, text)["n_one"] == 1
    fused = Loss("bce", from_logits=True, output=Sigmoid())(z, a, t)
    assert math.isfinite(fused.value) and 0 <= fused.value < 1e-15
    assert np.all(np.isfinite(fused.grad_z))
    with np.errstate(all="ignore"):
        clamped = Loss("bce", epsilon=1e-7, output=Sigmoid())(z, a, t)
    assert math.isfinite(clamped.value)


def test_textbook_cross_entropy_on_a_zero_probability_is_infinite():
    z = np.array([[-800.0, 0.0]])
    a = Softmax().forward(z)
    assert a[0, 0] == 0.0
    with np.errstate(all="ignore"):
        loss = Loss("cross_entropy", output=Softmax())
        text = loss(z, a, np.array([[1.0, 0.0]]))
    assert text.value == math.inf
    assert loss_in(loss, text)["n_zero"] == 1
    fused = Loss("cross_entropy", from_logits=True, output=Softmax())(z, a, np.array([[1.0, 0.0]]))
    assert fused.value == pytest.approx(800.0, rel=1e-15)


# ---------------------------------------------------------------- loss_in

SPREAD = np.array([[0.0, 1.0, 0.5, -0.2, 1.3, 1e-9, 1 - 1e-9]])


def loss_in(loss: Loss, result):
    """The step record's `loss_in` for this loss's output: what the record builder counts (None: no log)."""
    if result.log_input is None:
        return None
    return probability_stats(result.log_input, loss.epsilon, loss.two_sided)


def test_loss_in_counts_before_epsilon_bce():
    with np.errstate(all="ignore"):
        loss = identity_loss("bce", epsilon=1e-6)
        stats = loss_in(loss, loss(SPREAD, SPREAD, np.ones_like(SPREAD)))
    assert stats == {"n": 7, "min": -0.2, "max": 1.3, "n_zero": 1, "n_one": 1, "n_outside": 2,
                     "n_below_eps": 6}  # below: 0, -0.2, 1e-9; above 1 - eps: 1, 1.3, 1 - 1e-9


def test_loss_in_counts_before_epsilon_cross_entropy_is_one_sided():
    with np.errstate(all="ignore"):
        loss = identity_loss("cross_entropy", epsilon=1e-6)
        stats = loss_in(loss, loss(SPREAD, SPREAD, np.ones_like(SPREAD)))
    assert stats["n_zero"] == 1 and stats["n_one"] == 1 and stats["n_outside"] == 2
    assert stats["n_below_eps"] == 3


def test_loss_in_without_epsilon_counts_none_below_it():
    stats = probability_stats(SPREAD, 0.0, two_sided=True)
    assert stats["n_below_eps"] == 0
    assert stats["n_zero"] == 1 and stats["n_one"] == 1


def test_loss_in_is_absent_for_mse_from_logits_and_unprobed_steps():
    z = np.array([[0.3, 0.6]])
    t = np.array([[1.0, 0.0]])
    assert Loss("mse", output=Sigmoid())(z, z, t).log_input is None
    assert Loss("bce", from_logits=True, output=Sigmoid())(z, z, t).log_input is None
    assert loss_record(0, 0.5)["loss_in"] is None  # an unprobed step
    bce = Loss("bce", output=Sigmoid())
    assert loss_in(bce, bce(z, z, t))["n"] == 2


# ---------------------------------------------------------------- targets and dtype


def test_targets_layouts():
    y = np.array([0, 2, 1])
    np.testing.assert_array_equal(Loss("cross_entropy", output=Softmax()).targets(y, 3, np.float64), np.eye(3)[[0, 2, 1]])
    col = Loss("bce", output=Sigmoid()).targets(np.array([0, 1, 1]), 1, np.float32)
    assert col.shape == (3, 1) and col.dtype == np.float32
    np.testing.assert_array_equal(col[:, 0], [0, 1, 1])
    reg = np.array([[1.5], [2.5]])
    assert Loss("mse", output=Sigmoid()).targets(reg, 1, np.float64) is reg


@pytest.mark.parametrize("kind", ["mse", "bce", "cross_entropy"])
@pytest.mark.parametrize("from_logits", [False, True], ids=["textbook", "logits"])
def test_grad_keeps_the_model_dtype(kind, from_logits):
    z = np.array([[0.1, -0.4], [0.3, 0.2]], dtype=np.float32)
    out = Softmax() if kind == "cross_entropy" else Sigmoid()
    t = np.array([[1, 0], [0, 1]], dtype=np.float32)
    result = Loss(kind, from_logits=from_logits, output=out)(z, out.forward(z), t)
    assert result.grad_z.dtype == np.float32
    assert isinstance(result.value, float) and math.isfinite(result.value)

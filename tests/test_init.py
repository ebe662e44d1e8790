"""nnprobe.init: each weight rule's distribution against its formula, biases, scale, dtype, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.nn.initializers import WEIGHT_INITS, init_bias, init_weights

FAN_IN, FAN_OUT = 400, 300  # 120 000 samples
N = FAN_IN * FAN_OUT
# the sample std of n draws has standard error ~ sigma * sqrt((kurtosis - 1) / (4 n)); 6 standard errors
STD_TOL = 6 * math.sqrt(2 / (4 * N))
MEAN_TOL = 6 / math.sqrt(N)  # in units of sigma



def truncated_std(a: float) -> float:
    """Closed form: the std of N(0, 1) truncated to [-a, a] is sqrt(1 - 2 a phi(a) / (2 Phi(a) - 1))."""
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * a * phi / math.erf(a / math.sqrt(2)))


EXPECTED_STD = {
    "normal": 1.0,
    "truncated_normal": truncated_std(2.0),
    "lecun_uniform": math.sqrt(1 / FAN_IN),
    # Keras's VarianceScaling(truncated_normal) divides by the truncated std, so the rule's variance holds
    "xavier_truncated_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_truncated_normal": math.sqrt(2 / FAN_IN),
    "lecun_truncated_normal": math.sqrt(1 / FAN_IN),
    "xavier_uniform": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "xavier_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(2 / FAN_IN),
    "he_normal": math.sqrt(2 / FAN_IN),
    "lecun_normal": math.sqrt(1 / FAN_IN),
}


def draw(name, seed=0, scale=1.0, dtype=np.float64, fan_in=FAN_IN, fan_out=FAN_OUT):
    return init_weights(name, np.random.default_rng(seed), fan_in, fan_out, scale, dtype)


@pytest.mark.parametrize("name", sorted(EXPECTED_STD), ids=sorted(EXPECTED_STD))
def test_zero_centred_rules_have_the_formula_std(name):
    w = draw(name)
    sigma = EXPECTED_STD[name]
    assert w.shape == (FAN_IN, FAN_OUT)
    assert abs(w.std() / sigma - 1) < STD_TOL
    assert abs(w.mean()) < MEAN_TOL * sigma


@pytest.mark.parametrize("name", ["xavier_uniform", "he_uniform", "lecun_uniform"])
def test_uniform_rules_stay_inside_their_limit(name):
    w = draw(name)
    limit = math.sqrt(3) * EXPECTED_STD[name]
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit


def test_uniform_is_u01_like_np_random_rand():
    """The all-positive initialisation of seed case 1: every weight in [0, 1), mean 1/2, std 1/sqrt(12)."""
    w = draw("uniform")
    assert w.min() >= 0.0 and w.max() < 1.0
    assert abs(w.mean() - 0.5) < MEAN_TOL / math.sqrt(12)
    assert abs(w.std() * math.sqrt(12) - 1) < STD_TOL


def test_zeros():
    w = draw("zeros")
    assert w.shape == (FAN_IN, FAN_OUT) and not np.any(w)


def test_init_scale_multiplies_the_draw():
    np.testing.assert_allclose(draw("he_normal", scale=0.01), 0.01 * draw("he_normal"), rtol=1e-15)
    assert draw("uniform", scale=-2.0).max() <= 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype(dtype):
    assert draw("he_normal", dtype=dtype, fan_in=3, fan_out=4).dtype == dtype
    assert init_bias("normal", np.random.default_rng(0), 4, dtype).dtype == dtype
    assert init_bias(0.5, np.random.default_rng(0), 4, dtype).dtype == dtype


@pytest.mark.parametrize("name", sorted(WEIGHT_INITS), ids=sorted(WEIGHT_INITS))
def test_same_seed_same_weights(name):
    a, b = draw(name, seed=7, fan_in=5, fan_out=6), draw(name, seed=7, fan_in=5, fan_out=6)
    np.testing.assert_array_equal(a, b)
    if name != "zeros":
        assert not np.array_equal(a, draw(name, seed=8, fan_in=5, fan_out=6))


def test_bias_inits():
    rng = np.random.default_rng(0)
    assert not np.any(init_bias("zeros", rng, 5, np.float64))
    u = init_bias("uniform", np.random.default_rng(0), 10_000, np.float64)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    n = init_bias("normal", np.random.default_rng(0), 10_000, np.float64)
    assert abs(n.mean()) < 0.06 and abs(n.std() - 1) < 0.06
    np.testing.assert_array_equal(init_bias(0.1, rng, 3, np.float64), [0.1, 0.1, 0.1])
    np.testing.assert_array_equal(init_bias(-2, rng, 2, np.float64), [-2.0, -2.0])


def test_bias_draws_are_seeded():
    a = init_bias("normal", np.random.default_rng(3), 6, np.float64)
    np.testing.assert_array_equal(a, init_bias("normal", np.random.default_rng(3), 6, np.float64))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*he_normal"):
        draw("kaiming")
    with pytest.raises(ValueError, match="valid: .*zeros.*a range .*or a number"):
        init_bias("ones", np.random.default_rng(0), 3, np.float64)


@pytest.mark.parametrize("name", ["truncated_normal", "xavier_truncated_normal", "he_truncated_normal",
                                  "lecun_truncated_normal"])
def test_truncated_rules_cut_at_two_standard_deviations_of_the_untruncated_normal(name):
    """Every draw within 2 sigma of the N(0, sigma) that is truncated (sigma = std / truncated_std(2))."""
    w = draw(name)
    sigma = EXPECTED_STD[name] / truncated_std(2.0)
    assert np.abs(w).max() <= 2 * sigma
    assert np.abs(w).max() > 1.99 * sigma


def test_truncated_normal_takes_init_scale_as_its_std():
    """init: truncated_normal with init_scale 0.05 is Keras's TruncatedNormal(stddev=0.05): |w| <= 0.1."""
    w = draw("truncated_normal", scale=0.05)
    assert np.abs(w).max() <= 0.1
    assert abs(w.std() / (0.05 * truncated_std(2.0)) - 1) < STD_TOL


class Range:
    def __init__(self, low, high):
        self.low, self.high = low, high


def test_a_range_is_u_low_high():
    """{low: -0.05, high: 0.05}: mean 0, std 0.1 / sqrt(12), inside the range."""
    w = draw(Range(-0.05, 0.05))
    assert w.min() >= -0.05 and w.max() < 0.05
    assert abs(w.mean()) < MEAN_TOL * 0.1 / math.sqrt(12)
    assert abs(w.std() / (0.1 / math.sqrt(12)) - 1) < STD_TOL
    b = init_bias(Range(1.0, 3.0), np.random.default_rng(0), 10_000, np.float64)
    assert b.min() >= 1.0 and b.max() < 3.0


@pytest.mark.parametrize("name,limit", [("xavier_uniform", lambda n: math.sqrt(6 / (2 * n))),
                                        ("he_uniform", lambda n: math.sqrt(6 / n)),
                                        ("lecun_uniform", lambda n: math.sqrt(3 / n))])
def test_a_bias_drawn_by_a_weight_rule_has_fan_in_and_fan_out_n(name, limit):
    """Keras's bias_initializer='glorot_uniform' on n units: U(+-sqrt(6 / (n + n)))."""
    n = 20_000
    b = init_bias(name, np.random.default_rng(0), n, np.float64)
    assert b.shape == (n,)
    assert np.abs(b).max() <= limit(n) and np.abs(b).max() > 0.99 * limit(n)


def test_existing_rules_draw_what_they_drew_before():
    """Runs are reproducible across versions: the draws every older config made are unchanged."""
    rng = np.random.default_rng(11)
    expected = rng.standard_normal((3, 4)) * math.sqrt(2.0 / 3)
    np.testing.assert_array_equal(draw("he_normal", seed=11, fan_in=3, fan_out=4), expected)
    rng = np.random.default_rng(11)
    limit = math.sqrt(6.0 / (3 + 4))
    np.testing.assert_array_equal(draw("xavier_uniform", seed=11, fan_in=3, fan_out=4), rng.uniform(-limit, limit, (3, 4)))
    np.testing.assert_array_equal(init_bias("uniform", np.random.default_rng(2), 5, np.float64),
                                  np.random.default_rng(2).random(5))

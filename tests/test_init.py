"""nnprobe.init: each weight rule's distribution against its formula, biases, scale, dtype, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.nn.initializers import BIAS_INITS, WEIGHT_INITS, init_bias, init_weights

FAN_IN, FAN_OUT = 400, 300  # 120 000 samples
N = FAN_IN * FAN_OUT
# the sample std of n draws has standard error ~ sigma * sqrt((kurtosis - 1) / (4 n)); 6 standard errors
STD_TOL = 6 * math.sqrt(2 / (4 * N))
MEAN_TOL = 6 / math.sqrt(N)  # in units of sigma

EXPECTED_STD = {
    "normal": 1.0,
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


@pytest.mark.parametrize("name", ["xavier_uniform", "he_uniform"])
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
    assert set(BIAS_INITS) == {"zeros", "uniform", "normal"}


def test_bias_draws_are_seeded():
    a = init_bias("normal", np.random.default_rng(3), 6, np.float64)
    np.testing.assert_array_equal(a, init_bias("normal", np.random.default_rng(3), 6, np.float64))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*he_normal"):
        draw("kaiming")
    with pytest.raises(ValueError, match="valid: .*zeros.*or a number"):
        init_bias("ones", np.random.default_rng(0), 3, np.float64)

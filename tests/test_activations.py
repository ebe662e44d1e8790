"""nnprobe.activations: every registered derivative against central finite differences, closed forms,
the rounding the log-zero detector relies on, dtype preservation and the saturation thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.nn.activations import (
    ACTIVATIONS,
    HIDDEN,
    OUTPUT,
    RELU_FAMILY,
    Traits,
    LeakyReLU,
    Sigmoid,
    Softmax,
    Tanh,
    hidden_activation,
    output_activation,
)

RTOL = 1e-6
H = 1e-5
ELEMENTWISE = sorted({name for name in {**HIDDEN, **OUTPUT} if name != "softmax"})
KINKED = {"relu", "leaky_relu", "elu"}


def make(name: str):
    return HIDDEN[name]() if name in HIDDEN else OUTPUT[name]()


def points(name: str, rng: np.random.Generator) -> np.ndarray:
    """Float64 inputs spread over [-4, 4], kept away from the kink at 0 for the piecewise ones."""
    z = rng.uniform(-4, 4, size=(6, 5))
    if name in KINKED:
        z = np.where(np.abs(z) < 1e-3, 0.5, z)
        z[0, :2] = [1e-2, -1e-2]  # close to the kink, still outside the FD stencil
    return z


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8)))


@pytest.mark.parametrize("name", ELEMENTWISE, ids=ELEMENTWISE)
def test_derivative_matches_central_differences(name):
    act = make(name)
    z = points(name, np.random.default_rng(1))
    a = act.forward(z)
    numeric = (act.forward(z + H) - act.forward(z - H)) / (2 * H)
    assert rel_err(act.derivative(z, a), numeric) < RTOL


@pytest.mark.parametrize("name", ELEMENTWISE, ids=ELEMENTWISE)
def test_vjp_is_gradient_times_derivative(name):
    act = make(name)
    rng = np.random.default_rng(2)
    z = points(name, rng)
    g = rng.standard_normal(z.shape)
    a = act.forward(z)
    np.testing.assert_allclose(act.vjp(z, a, g), g * act.derivative(z, a), rtol=1e-15, atol=0)


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu_derivative_uses_its_slope(slope):
    act = LeakyReLU(slope)
    z = np.array([[-2.0, -0.5, 0.5, 3.0]])
    a = act.forward(z)
    np.testing.assert_array_equal(a, [[-2.0 * slope, -0.5 * slope, 0.5, 3.0]])
    np.testing.assert_array_equal(act.derivative(z, a), [[slope, slope, 1.0, 1.0]])
    numeric = (act.forward(z + H) - act.forward(z - H)) / (2 * H)
    assert rel_err(act.vjp(z, a, np.ones_like(z)), numeric) < RTOL


def test_hidden_activation_passes_the_negative_slope():
    act = hidden_activation("leaky_relu", 0.3)
    assert act.forward(np.array([-1.0]))[0] == -0.3


def test_relu_derivative_is_zero_at_the_kink():
    """relu'(0) = 0 as most hand-written code has it: a unit with z = 0 passes no gradient."""
    act = HIDDEN["relu"]()
    z = np.array([[0.0, -1.0, 1.0]])
    np.testing.assert_array_equal(act.derivative(z, act.forward(z)), [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(act.vjp(z, act.forward(z), np.full_like(z, 7.0)), [[0.0, 0.0, 7.0]])


def test_softmax_vjp_matches_central_differences_of_a_scalar():
    """d/dz of sum(g * softmax(z)) is the vector-Jacobian product softmax must return."""
    act = Softmax()
    rng = np.random.default_rng(3)
    z = rng.uniform(-3, 3, size=(4, 5))
    g = rng.standard_normal(z.shape)
    a = act.forward(z)
    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += H
        zm[idx] -= H
        numeric[idx] = (np.sum(g * act.forward(zp)) - np.sum(g * act.forward(zm))) / (2 * H)
    assert rel_err(act.vjp(z, a, g), numeric) < RTOL


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    act = Softmax()
    z = np.array([[1000.0, 1000.0, 0.0], [-1000.0, 0.0, 1.0]])
    a = act.forward(z)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(a[0], [0.5, 0.5, 0.0], atol=1e-300)


def test_softmax_has_no_elementwise_derivative():
    with pytest.raises(TypeError, match="vjp"):
        Softmax().derivative(np.zeros((1, 2)), np.zeros((1, 2)))


# ---------------------------------------------------------------- closed forms


def test_closed_forms_at_known_points():
    z = np.array([0.0, 1.0, -1.0, 2.0])
    sig = Sigmoid().forward(z)
    assert sig[0] == 0.5
    assert sig[1] == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-15)
    assert sig[1] + sig[2] == pytest.approx(1.0, rel=1e-15)
    sp = HIDDEN["softplus"]().forward(z)
    assert sp[0] == pytest.approx(math.log(2), rel=1e-15)
    assert sp[3] == pytest.approx(math.log1p(math.exp(2)), rel=1e-15)
    elu = HIDDEN["elu"]().forward(z)
    assert elu[2] == pytest.approx(math.exp(-1) - 1, rel=1e-15)
    assert elu[1] == 1.0
    gelu = HIDDEN["gelu"]().forward(z)
    c = math.sqrt(2 / math.pi)
    assert gelu[0] == 0.0
    assert gelu[1] == pytest.approx(0.5 * (1 + math.tanh(c * (1 + 0.044715))), rel=1e-15)
    assert gelu[3] == pytest.approx(0.5 * 2 * (1 + math.tanh(c * (2 + 0.044715 * 8))), rel=1e-15)
    assert gelu[1] == pytest.approx(0.8412, abs=1e-4)  # the published tanh-approximation value
    assert Tanh().forward(z)[1] == pytest.approx(math.tanh(1), rel=1e-15)
    np.testing.assert_array_equal(HIDDEN["identity"]().forward(z), z)


def test_softplus_is_finite_for_large_inputs():
    sp = HIDDEN["softplus"]().forward(np.array([1000.0, -1000.0]))
    assert sp[0] == 1000.0
    assert sp[1] == 0.0


def test_sigmoid_rounds_to_exactly_one_at_40():
    """The log-zero detector relies on this: textbook BCE sees log(1 - 1) exactly as hand-written code does."""
    assert Sigmoid().forward(np.array([40.0]))[0] == 1.0


def test_sigmoid_of_minus_1000_is_finite_without_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        a = Sigmoid().forward(np.array([-1000.0, 1000.0]))
    assert a[0] == 0.0
    assert a[1] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("name", sorted({**HIDDEN, **OUTPUT}), ids=sorted({**HIDDEN, **OUTPUT}))
def test_forward_keeps_dtype(name, dtype):
    act = make(name)
    z = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    a = act.forward(z)
    assert a.dtype == dtype
    if act.elementwise:
        assert act.derivative(z, a).dtype == dtype
    assert act.vjp(z, a, np.ones_like(z)).dtype == dtype


# ---------------------------------------------------------------- saturation


@pytest.mark.parametrize("cls", [Sigmoid, Tanh], ids=["sigmoid", "tanh"])
def test_saturation_threshold_is_where_the_derivative_is_one_percent_of_its_max(cls):
    act = cls()
    peak = act.derivative(np.zeros(1), act.forward(np.zeros(1)))[0]
    z = np.array([act.saturation, -act.saturation])
    d = act.derivative(z, act.forward(z))
    np.testing.assert_allclose(d, 0.01 * peak, rtol=1e-9)


def test_sigmoid_saturation_value():
    """Regression: the sigmoid constant was 2 acosh(5) = 4.585, where the derivative is 4% of its max."""
    assert Sigmoid.saturation == pytest.approx(5.9864, abs=1e-4)
    assert Tanh.saturation == pytest.approx(2.9932, abs=1e-4)


def test_non_saturating_activations_have_no_threshold():
    for name in sorted({**HIDDEN, **OUTPUT}):
        if name not in ("sigmoid", "tanh"):
            assert make(name).saturation is None, name


# ---------------------------------------------------------------- registries


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*relu"):
        hidden_activation("rleu")
    with pytest.raises(ValueError, match="valid: .*softmax"):
        output_activation("softmin")


def test_every_builtin_declares_its_traits_and_the_registries_follow_them():
    """One definition per concept: the hidden/output registries, the ReLU family and the flat regions are all
    read off the classes' traits (a drift test: a new activation class is covered the day it is added)."""
    for name, cls in ACTIVATIONS.items():
        assert cls.name == name and isinstance(cls.traits, Traits), name
        assert cls.traits.family in ("relu", "squashing", "smooth", "linear", "normalizing"), name
        assert cls.traits.init_rule in ("he", "xavier", "lecun"), name
        assert (cls.saturation is not None) == (cls.traits.family == "squashing"), name
    assert set(HIDDEN) == {n for n, c in ACTIVATIONS.items() if c.traits.hidden}
    assert set(OUTPUT) == {n for n, c in ACTIVATIONS.items() if c.traits.output}
    assert RELU_FAMILY == {n for n, c in ACTIVATIONS.items() if c.traits.dead_units}


def test_config_accepts_exactly_the_registries():
    """config.py's allowed values are the registries' (no second list to keep in step)."""
    import typing

    from nnprobe.config import BUILTIN_ACTIVATIONS, ModelConfig

    assert BUILTIN_ACTIVATIONS == tuple(HIDDEN)
    assert set(typing.get_args(ModelConfig.model_fields["output"].annotation)) == set(OUTPUT)


def test_docs_table_is_the_registry():
    """docs/activations.md lists every activation with the traits its class declares."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "activations.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    expected = {
        name: [c.traits.family, "yes" if c.traits.dead_units else "no",
               "-" if c.saturation is None else f"{c.saturation:.3f}", c.traits.init_rule,
               "yes" if c.traits.hidden else "no", "yes" if c.traits.output else "no"]
        for name, c in ACTIVATIONS.items()
    }
    assert rows == expected


def test_registries_match_the_spec():
    """The names SPEC.md promises are all there (a new activation is one class: no list here to edit)."""
    assert set(HIDDEN) >= {"relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "softplus", "identity"}
    assert set(OUTPUT) >= {"identity", "sigmoid", "softmax", "relu", "tanh"}
    assert RELU_FAMILY >= {"relu", "leaky_relu"}
    assert not Softmax.elementwise


@pytest.mark.parametrize("shape", [(64, 48), (128, 64)], ids=["np.where-sized", "bit-select-sized"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("slope", [0.01, 0.2, 0.0, 1.5])
def test_leaky_relu_forward_and_vjp_are_np_where_bit_for_bit(dtype, slope, shape):
    """The branch-free formulations inside LeakyReLU give np.where's bits: NaN, inf, signed zeros, tiny z."""
    bits = {"float16": np.int16, "float32": np.int32, "float64": np.int64}[dtype]
    rng = np.random.default_rng(12)
    z = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    z[0, :7] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1e-7]
    g[0, :6] = [1.0, np.nan, np.inf, -np.inf, np.nan, -0.0]
    g[1, :4] = -0.0
    act = LeakyReLU(slope)
    given = g.copy()
    with np.errstate(all="ignore"):
        forward, backward = act.forward(z), act.vjp(z, None, given)
        want_forward, want_backward = np.where(z > 0, z, z * slope), np.where(z > 0, g, g * slope)
    assert forward.dtype == want_forward.dtype and backward.dtype == want_backward.dtype
    np.testing.assert_array_equal(forward.view(bits), want_forward.view(bits))
    np.testing.assert_array_equal(backward.view(bits), want_backward.view(bits))
    np.testing.assert_array_equal(given.view(bits), g.view(bits))  # the incoming gradient is left alone


# ---------------------------------------------------------------- the textbook sigmoid's lower tail


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["float16", "float32", "float64"])
def test_sigmoid_is_the_textbook_formula_bit_for_bit(dtype):
    """What hand-written code computes, on both sides of each saturation point (and past the overflow)."""
    z = np.concatenate([np.linspace(-800, 800, 4001), [-745.2, -709.8, -104.0, -88.8, -88.7, -17.4, 0.0, 40.0]])
    z = z.astype(dtype)
    with np.errstate(over="ignore"):
        textbook = 1 / (1 + np.exp(-z))
    np.testing.assert_array_equal(Sigmoid().forward(z), textbook)


@pytest.mark.parametrize("dtype,z", [(np.float32, -89.0), (np.float32, -100.0), (np.float64, -710.0),
                                     (np.float64, -740.0)], ids=["f32-89", "f32-100", "f64-710", "f64-740"])
def test_sigmoid_below_the_overflow_of_exp_is_exactly_zero(dtype, z):
    """Regression: the sigmoid stayed above 0 down to z ~ -104 (float32) / -745 (float64), where
    1 / (1 + exp(-z)) and torch.sigmoid give exactly 0, so a textbook BCE that turns inf in
    hand-written code reported a finite loss instead (of 47.5) and no log-zero."""
    with np.errstate(over="raise"):
        a = Sigmoid().forward(np.array([z], dtype=dtype))
    assert a[0] == 0.0 and a.dtype == dtype


def test_textbook_bce_of_a_sigmoid_saturated_at_zero_is_infinite_and_counted():
    """The band between the overflow of exp(-z) and the old sigmoid's underflow: log(0) for a positive label."""
    from nnprobe.nn.losses import Loss

    z = np.array([[-95.0], [3.0]], dtype=np.float32)
    t = np.array([[1.0], [1.0]], dtype=np.float32)
    sig = Sigmoid()
    loss = Loss("bce", output=sig)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = loss(z, sig.forward(z), t)
    assert out.value == math.inf
    from nnprobe.probes.statistics import probability_stats

    assert probability_stats(out.log_input, loss.epsilon, two_sided=True)["n_zero"] == 1


# ---------------------------------------------------------------- the two GELUs


def test_gelu_erf_closed_form():
    """z Phi(z) with the standard normal CDF Phi: Phi(1) = 0.8413447460685429, Phi(2) = 0.9772498680518208."""
    z = np.array([-1.0, 0.0, 1.0, 2.0])
    a = HIDDEN["gelu_erf"]().forward(z)
    np.testing.assert_allclose(a, [-(1 - 0.8413447460685429), 0.0, 0.8413447460685429, 2 * 0.9772498680518208],
                               rtol=1e-15, atol=1e-16)
    # a' = Phi(z) + z phi(z): at 1, 0.8413447460685429 + 0.24197072451914337
    d = HIDDEN["gelu_erf"]().derivative(z, a)
    assert d[2] == pytest.approx(0.8413447460685429 + 0.24197072451914337, rel=1e-15)
    assert d[1] == 0.5


def test_gelu_is_the_tanh_approximation_within_5e_4_of_gelu_erf():
    z = np.linspace(-6, 6, 2001)
    gap = np.abs(HIDDEN["gelu"]().forward(z) - HIDDEN["gelu_erf"]().forward(z))
    assert 1e-4 < gap.max() < 5e-4

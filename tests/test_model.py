"""nnprobe.model: backprop through the whole MLP against central finite differences of the total loss,
for every hidden activation x output activation x loss (the Foundation issue's headline test)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnprobe.nn.activations import HIDDEN, OUTPUT
from nnprobe.config import ModelConfig
from nnprobe.nn.losses import Loss, one_hot
from nnprobe.nn.model import MLP, build_mlp, output_units

RTOL = 1e-6
FLOOR = 1e-4  # below this a gradient entry is compared absolutely (FD roundoff: ~eps * loss / H)
H = 3e-4  # with the fourth-order central stencil, truncation ~H^4 and roundoff ~1e-12 both stay far below RTOL
KINK_MARGIN = 1e-2  # every relu/leaky_relu/elu pre-activation is farther than this from 0, beyond the stencil
N, N_IN, WIDTHS, K = 5, 3, [4, 3], 3
L2 = 0.05
KINKED = {"relu", "leaky_relu", "elu"}
LOSS_FORMS = [("mse", False), ("bce", False), ("bce", True), ("cross_entropy", False), ("cross_entropy", True)]
CASES = list(itertools.product(sorted(HIDDEN), sorted(OUTPUT), LOSS_FORMS))
IDS = [f"{h}-{o}-{k}-{'logits' if fl else 'textbook'}" for h, o, (k, fl) in CASES]


def model_config(hidden: str, output: str, **kw) -> ModelConfig:
    init = "xavier_normal" if hidden in ("sigmoid", "tanh") else "he_normal"
    return ModelConfig(hidden=WIDTHS, activation=hidden, output=output, init=init, bias_init="normal",
                       negative_slope=0.1, dtype="float64", **kw)


def total_loss(model: MLP, loss: Loss, x, t) -> float:
    model.forward(x)
    out = model.output
    return loss(out.z, out.a, t).value + model.l2_penalty(L2)


def build_case(hidden: str, output: str, kind: str, from_logits: bool):
    """A 3-4-3-3 net whose textbook log arguments lie in (0, 1) and whose kinks are far from every z."""
    for seed in range(100):
        rng = np.random.default_rng(seed)
        model = build_mlp(model_config(hidden, output), N_IN, K, rng)
        x = rng.standard_normal((N, N_IN))
        model.forward(x)
        if kind != "mse" and not from_logits and output not in ("sigmoid", "softmax"):
            # identity/relu/tanh outputs fed into a log: keep them in (0.3, 0.7), as a lucky hand-written net's are
            out = model.output
            out.W *= 0.2 / np.max(np.abs(out.x @ out.W))
            out.b[:] = 0.5
            model.forward(x)
        kinked = [l.z for l in model.layers[:-1] if hidden in KINKED] + ([model.output.z] if output == "relu" else [])
        if all(np.min(np.abs(z)) > KINK_MARGIN for z in kinked):
            break
    else:  # pragma: no cover - the search above always succeeds for these sizes
        raise AssertionError("no seed keeps the pre-activations away from the kinks")
    if kind == "mse":
        t = rng.standard_normal((N, K))
    elif kind == "bce":
        t = rng.integers(0, 2, size=(N, K)).astype(np.float64)
    else:
        t = one_hot(rng.integers(0, K, size=N), K, np.float64)
    loss = Loss(kind, reduction="mean", from_logits=from_logits, output=model.output.activation)
    return model, loss, x, t


def numeric_grads(model: MLP, loss: Loss, x, t) -> list[np.ndarray]:
    """Central differences, fourth order: (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h, one parameter at a time."""
    out = []
    for p in model.params():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            keep = p[idx]
            f = {}
            for step in (-2, -1, 1, 2):
                p[idx] = keep + step * H
                f[step] = total_loss(model, loss, x, t)
            p[idx] = keep
            g[idx] = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * H)
        out.append(g)
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), FLOOR)))


@pytest.mark.parametrize(("hidden", "output", "loss_form"), CASES, ids=IDS)
def test_backprop_matches_finite_differences(hidden, output, loss_form):
    kind, from_logits = loss_form
    model, loss, x, t = build_case(hidden, output, kind, from_logits)
    value = total_loss(model, loss, x, t)
    assert np.isfinite(value)
    out = model.output
    grads = model.backward(loss(out.z, out.a, t).grad_z, L2)
    numeric = numeric_grads(model, loss, x, t)
    names = [f"{kind_}{l.name}" for l in model.layers for kind_ in ("W", "b")]
    for name, analytic, fd in zip(names, grads.flat(), numeric):
        assert analytic.shape == fd.shape, name
        assert np.any(fd != 0), name  # the comparison means something
        assert rel_err(analytic, fd) < RTOL, name


def test_backward_with_sum_reduction_and_one_sigmoid_unit():
    rng = np.random.default_rng(5)
    model = build_mlp(model_config("tanh", "sigmoid"), N_IN, 1, rng)
    x = rng.standard_normal((N, N_IN))
    t = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    loss = Loss("bce", reduction="sum", output=model.output.activation)
    model.forward(x)
    grads = model.backward(loss(model.output.z, model.output.a, t).grad_z, L2)
    for analytic, fd in zip(grads.flat(), numeric_grads(model, loss, x, t)):
        assert rel_err(analytic, fd) < RTOL


def test_l2_penalises_weights_not_biases():
    rng = np.random.default_rng(0)
    model = build_mlp(model_config("tanh", "identity"), N_IN, K, rng)
    x = rng.standard_normal((N, N_IN))
    model.forward(x)
    zero = np.zeros((N, K))
    grads = model.backward(zero, l2=0.5)
    for layer, gw, gb in zip(model.layers, grads.dW, grads.db):
        np.testing.assert_allclose(gw, 0.5 * layer.W, rtol=1e-15)
        np.testing.assert_array_equal(gb, 0.0)
    expected = 0.25 * sum(float(np.sum(l.W**2)) for l in model.layers)
    assert model.l2_penalty(0.5) == pytest.approx(expected, rel=1e-14)
    assert model.l2_penalty(0.0) == 0.0


# ---------------------------------------------------------------- structure, caches, predict


def test_build_mlp_names_shapes_and_activations():
    model = build_mlp(model_config("relu", "softmax"), 3, 4, np.random.default_rng(0))
    assert [l.name for l in model.layers] == ["dense1", "dense2", "dense3"]
    assert [(l.fan_in, l.units) for l in model.layers] == [(3, 4), (4, 3), (3, 4)]
    assert [l.activation_name for l in model.layers] == ["relu", "relu", "softmax"]
    assert model.output is model.layers[-1]
    assert [p.shape for p in model.params()] == [(3, 4), (4,), (4, 3), (3,), (3, 4), (4,)]
    assert all(p.dtype == np.float64 for p in model.params())


def test_params_are_the_layer_arrays_so_in_place_updates_reach_the_model():
    model = build_mlp(model_config("relu", "identity"), 3, 1, np.random.default_rng(0))
    w_before = model.layers[0].W.copy()
    b_before = model.layers[1].b.copy()
    params = model.params()
    params[0] += 1.0
    params[3] -= 2.0
    np.testing.assert_array_equal(model.layers[0].W, w_before + 1.0)
    np.testing.assert_array_equal(model.layers[1].b, b_before - 2.0)


def test_negative_slope_reaches_the_hidden_layers():
    model = build_mlp(model_config("leaky_relu", "identity"), 3, 1, np.random.default_rng(0))
    assert model.layers[0].activation.forward(np.array([-1.0]))[0] == pytest.approx(-0.1)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtype_propagates_through_forward_and_backward(dtype):
    cfg = ModelConfig(hidden=[4], activation="tanh", output="sigmoid", init="xavier_normal", dtype=dtype)
    model = build_mlp(cfg, 3, 2, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(dtype)
    a = model.forward(x)
    assert a.dtype == np.dtype(dtype)
    loss = Loss("bce", output=model.output.activation)
    grads = model.backward(loss(model.output.z, a, np.ones((5, 2), dtype=dtype)).grad_z)
    assert all(g.dtype == np.dtype(dtype) for g in grads.flat())


def test_forward_caches_what_backward_and_the_probes_read():
    model = build_mlp(model_config("relu", "sigmoid"), 3, 2, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 3))
    a = model.forward(x)
    assert model.layers[0].x is x
    for below, layer in zip(model.layers, model.layers[1:]):
        assert layer.x is below.a
    for layer in model.layers:
        np.testing.assert_allclose(layer.z, layer.x @ layer.W + layer.b, rtol=1e-15)
        np.testing.assert_array_equal(layer.a, layer.activation.forward(layer.z))
    assert a is model.output.a


def test_predict_matches_forward_and_leaves_the_caches_alone():
    model = build_mlp(model_config("gelu", "softmax"), 3, 3, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x_train, x_val = rng.standard_normal((5, 3)), rng.standard_normal((7, 3))
    model.forward(x_train)
    cached = [(l.x, l.z, l.a) for l in model.layers]
    z, a = model.predict(x_val)
    assert all(l.x is c[0] and l.z is c[1] and l.a is c[2] for l, c in zip(model.layers, cached))
    model2 = build_mlp(model_config("gelu", "softmax"), 3, 3, np.random.default_rng(0))
    a2 = model2.forward(x_val)
    np.testing.assert_allclose(a, a2, rtol=1e-14)
    np.testing.assert_allclose(z, model2.output.z, rtol=1e-14)


def test_same_rng_seed_gives_identical_models():
    m1 = build_mlp(model_config("relu", "identity"), 3, 2, np.random.default_rng(42))
    m2 = build_mlp(model_config("relu", "identity"), 3, 2, np.random.default_rng(42))
    m3 = build_mlp(model_config("relu", "identity"), 3, 2, np.random.default_rng(43))
    assert all(np.array_equal(p, q) for p, q in zip(m1.params(), m2.params()))
    assert not np.array_equal(m1.params()[0], m3.params()[0])


def test_a_user_hidden_activation_overrides_the_configured_one():
    tanh = HIDDEN["tanh"]()
    model = build_mlp(model_config("relu", "identity"), 3, 1, np.random.default_rng(0), hidden=tanh)
    assert model.layers[0].activation is tanh and model.layers[1].activation is tanh
    assert model.output.activation is not tanh


@pytest.mark.parametrize(
    ("task", "kind", "output", "n_targets", "n_classes", "units"),
    [
        ("regression", "mse", "identity", 2, None, 2),
        ("classification", "bce", "sigmoid", 1, 2, 1),
        ("classification", "bce", "softmax", 1, 2, 2),
        ("classification", "bce", "sigmoid", 1, 4, 4),
        ("classification", "cross_entropy", "softmax", 1, 2, 2),
        ("classification", "cross_entropy", "softmax", 1, 5, 5),
        ("classification", "mse", "sigmoid", 1, 3, 3),
    ],
)
def test_output_units_follow_the_loss(task, kind, output, n_targets, n_classes, units):
    assert output_units(task, kind, output, n_targets, n_classes) == units

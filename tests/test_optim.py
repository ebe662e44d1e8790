"""nnprobe.optim: every update rule against a hand computation over three steps, the update norms it
reports and in-place updates (clipping: tests/test_clip.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from nnprobe.nn.optim import OPTIMIZERS, SGD, make_optimizer

LR, MU, B1, B2, EPS = 0.1, 0.9, 0.9, 0.999, 1e-8
GRADS = [
    [np.array([1.0, -2.0]), np.array([[0.5]])],
    [np.array([0.5, 1.0]), np.array([[-1.0]])],
    [np.array([-1.0, 0.25]), np.array([[2.0]])],
]
P0 = [np.array([1.0, 1.0]), np.array([[-3.0]])]


def config(kind: str) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, lr=LR, momentum=MU, beta1=B1, beta2=B2, eps=EPS)


def reference(kind: str) -> list[list[np.ndarray]]:
    """Parameters after each step, written out the way the papers / PyTorch docs state the rules."""
    p = [x.copy() for x in P0]
    state = {"v": [np.zeros_like(x) for x in p], "m": [np.zeros_like(x) for x in p],
             "s": [np.zeros_like(x) for x in p]}
    history = []
    for t, grads in enumerate(GRADS, 1):
        for i, g in enumerate(grads):
            if kind == "sgd":
                p[i] = p[i] - LR * g
            elif kind == "momentum":
                state["v"][i] = MU * state["v"][i] - LR * g
                p[i] = p[i] + state["v"][i]
            elif kind == "nesterov":  # torch.optim.SGD(nesterov=True), dampening 0
                state["v"][i] = MU * state["v"][i] + g
                p[i] = p[i] - LR * (g + MU * state["v"][i])
            elif kind == "adam":
                state["m"][i] = B1 * state["m"][i] + (1 - B1) * g
                state["s"][i] = B2 * state["s"][i] + (1 - B2) * g**2
                m_hat = state["m"][i] / (1 - B1**t)
                s_hat = state["s"][i] / (1 - B2**t)
                p[i] = p[i] - LR * m_hat / (np.sqrt(s_hat) + EPS)
            elif kind == "rmsprop":  # torch.optim.RMSprop with alpha = beta2
                state["s"][i] = B2 * state["s"][i] + (1 - B2) * g**2
                p[i] = p[i] - LR * g / (np.sqrt(state["s"][i]) + EPS)
            elif kind == "adagrad":  # torch.optim.Adagrad, lr_decay 0, initial accumulator 0
                state["s"][i] = state["s"][i] + g**2
                p[i] = p[i] - LR * g / (np.sqrt(state["s"][i]) + EPS)
        history.append([x.copy() for x in p])
    return history


KINDS = sorted(OPTIMIZERS)


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_update_rule_matches_the_hand_computation(kind):
    params = [x.copy() for x in P0]
    opt = make_optimizer(params, config(kind))
    for grads, expected in zip(GRADS, reference(kind)):
        before = [x.copy() for x in params]
        norms = opt.step([g.copy() for g in grads])
        for p, e in zip(params, expected):
            np.testing.assert_allclose(p, e, rtol=1e-13, atol=1e-15)
        for n, p, b in zip(norms, params, before):
            assert n == pytest.approx(float(np.linalg.norm(p - b)), rel=1e-12)
            assert n > 0


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_updates_in_place_and_skips_norms_when_not_asked(kind):
    params = [x.copy() for x in P0]
    ids = [id(p) for p in params]
    opt = make_optimizer(params, config(kind))
    assert opt.step([g.copy() for g in GRADS[0]], want_norms=False) is None
    assert [id(p) for p in opt.params] == ids
    assert not np.array_equal(params[0], P0[0])
    assert opt.t == 1


def test_adam_first_step_moves_each_parameter_by_about_lr():
    """Bias correction makes the first Adam step lr * sign(g) (up to eps), whatever the gradient's scale."""
    params = [np.array([0.0, 0.0, 0.0])]
    opt = make_optimizer(params, config("adam"))
    opt.step([np.array([1e-3, -50.0, 7.0])])
    np.testing.assert_allclose(params[0], [-LR, LR, -LR], rtol=1e-4)


def test_sgd_hand_numbers():
    p = [np.array([1.0, 2.0])]
    norms = SGD(p, 0.5).step([np.array([2.0, -4.0])])
    np.testing.assert_array_equal(p[0], [0.0, 4.0])
    assert norms == [pytest.approx(math.sqrt(1 + 4))]


def test_momentum_does_not_alias_its_velocity_into_the_gradient():
    """The returned update must not change the caller's gradient arrays."""
    params = [np.array([1.0])]
    g = np.array([2.0])
    opt = make_optimizer(params, config("momentum"))
    opt.step([g])
    opt.step([g])
    np.testing.assert_array_equal(g, [2.0])
    np.testing.assert_allclose(params[0], [1.0 - LR * 2 - (MU * LR * 2 + LR * 2)], rtol=1e-15)


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_float32_parameters_stay_float32(kind):
    params = [np.array([1.0, -1.0], dtype=np.float32)]
    opt = make_optimizer(params, config(kind))
    opt.step([np.array([0.5, 0.25], dtype=np.float32)])
    assert params[0].dtype == np.float32


def test_adagrad_hand_numbers():
    """Closed form: with a constant gradient g the accumulator after t steps is t g^2, so step t moves
    p by lr g / (sqrt(t) |g| + eps) = lr sign(g) / sqrt(t) (eps aside): the steps shrink as 1/sqrt(t)."""
    params = [np.array([0.0, 0.0])]
    opt = make_optimizer(params, config("adagrad"))
    g = np.array([3.0, -0.5])
    for _ in range(4):
        opt.step([g.copy()])
    moved = LR * sum(1 / math.sqrt(t) for t in range(1, 5))
    np.testing.assert_allclose(params[0], [-moved, moved], rtol=1e-7)

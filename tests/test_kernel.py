"""nnprobe/probes/_kernels.c: the one-pass statistics and the fused SGD update against NumPy, and the
trainer's records with the kernel on and off (the same run, bit for bit where the arithmetic is)."""

from __future__ import annotations

import math
import platform
from pathlib import Path

import numpy as np
import pytest

from nnprobe.probes import kernel
from nnprobe.config import validate_config
from nnprobe.data import load_dataset
from nnprobe.nn.optim import SGD, make_optimizer
from nnprobe.train.loop import Trainer

needs_kernel = pytest.mark.skipif(kernel._kernels is None or not kernel._kernels.available(),
                                  reason="the C kernel is not built here or the CPU lacks AVX2")

# the 8-lane loop, the 256-entry blocks and a scalar tail in every combination
SIZES = [1, 7, 8, 9, 255, 256, 257, 1000, 4099]


def _avx2_linux() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text(errors="replace")
    return " avx2" in flags and " fma" in flags


@pytest.mark.skipif(not _avx2_linux(), reason="only x86-64 Linux with AVX2 and FMA must have the kernel")
def test_the_kernel_is_built_and_used_where_the_cpu_can_run_it():
    # a broken build would otherwise fall back to NumPy silently and only the benchmark would notice
    assert kernel._kernels is not None, "nnprobe._kernels did not build: is a C compiler installed?"
    assert kernel._kernels.available()


@pytest.fixture
def kernel_on():
    was = kernel.in_use()
    kernel.use(True)
    yield kernel.active
    kernel.use(was)


@needs_kernel
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cols", [0, 1, 3, 8, 13])
def test_one_pass_statistics_against_numpy(kernel_on, n, cols):
    rng = np.random.default_rng(n * 31 + cols)
    if cols:
        n = max(cols, n - n % cols)
    x = rng.integers(-3, 4, n).astype(np.float32) * np.float32(0.75)  # exact zeros, ties, |x| = 2.25 > sat
    x[: n // 5] = rng.standard_normal(n // 5)
    if cols and n // cols > 1:
        x.reshape(-1, cols)[:, 0] = -np.abs(x.reshape(-1, cols)[:, 0])  # a dead column
    d = x.astype(np.float64)
    n_, total, ss, mn, mx, zeros, dead = kernel_on.stats(x, False, cols)
    assert n_ == n and zeros == int(np.count_nonzero(x == 0))
    assert (mn, mx) == (float(x.min()), float(x.max()))
    assert total == pytest.approx(d.sum(), rel=1e-6, abs=1e-6 * np.abs(d).sum())
    assert ss == pytest.approx(np.dot(d, d), rel=1e-6)
    want_dead = int(np.count_nonzero(x.reshape(-1, cols).max(axis=0) <= 0)) if cols else -1
    assert dead == want_dead
    got = kernel_on.stats(x, True, cols, 2.0)
    pos = np.maximum(d, 0)
    assert got[0] == n_ and got[3:6] == (mn, mx, -1)  # the sums run in another order: equal up to rounding
    assert got[1] == pytest.approx(total, rel=1e-6, abs=1e-6 * np.abs(d).sum()) and got[2] == pytest.approx(ss, rel=1e-6)
    assert got[6] == pytest.approx(pos.sum(), rel=1e-6, abs=1e-12)
    assert got[7] == pytest.approx(np.dot(pos, pos), rel=1e-6, abs=1e-12)
    assert got[8:] == (int(np.count_nonzero(x > 0)), int(np.count_nonzero(np.abs(x) > 2.0)), want_dead)


@needs_kernel
def test_non_finite_entries_make_the_sum_of_squares_non_finite(kernel_on):
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(300, dtype=np.float32)
        x[257] = bad
        assert not math.isfinite(kernel_on.stats(x)[2])


@needs_kernel
def test_rejects_what_it_cannot_read(kernel_on):
    with pytest.raises(TypeError):
        kernel_on.stats(np.ones(4))  # float64
    with pytest.raises(ValueError):
        kernel_on.stats(np.ones(6, dtype=np.float32), False, 4)
    with pytest.raises(ValueError):
        kernel_on.stats(np.ones((4, 4), dtype=np.float32)[:, :2])  # not contiguous
    p = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError):
        kernel_on.axpy(p, p, 1.0)


@needs_kernel
@pytest.mark.parametrize("rows,cols", [(1, 1), (100, 3), (7, 13), (33, 16), (5, 24), (64, 256)])
def test_fused_bias_relu_is_numpys_bit_for_bit_and_measures_z(kernel_on, rows, cols):
    rng = np.random.default_rng(rows * cols)
    z0 = rng.standard_normal((rows, cols)).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    flat = z0.reshape(-1)
    flat[::5] = -np.resize(b, flat.size)[::5]  # exact zeros after the add
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 1e-45, -1e-45], dtype=np.float32)
    k = min(flat.size, specials.size)
    flat[:k] = specials[:k] - b[np.arange(k) % cols]  # NaN payloads, infinities, signed zeros, subnormals
    want_z = z0.copy()
    want_z += b
    want_a = np.maximum(want_z, 0)
    for measure in (False, True):
        z, a = z0.copy(), np.empty_like(z0)
        got = kernel_on.bias_relu(z, b, a, measure)
        assert np.array_equal(z.view(np.int32), want_z.view(np.int32))
        assert np.array_equal(a.view(np.int32), want_a.view(np.int32))
        assert (got is None) == (not measure)
    # what it measured is what a separate pass over the same z finds
    finite = z0.copy()
    finite.reshape(-1)[:k] = 0.5
    z, a = finite.copy(), np.empty_like(finite)
    got = kernel_on.bias_relu(z, b, a, True)
    ref = kernel_on.stats(z.reshape(-1), True, cols)
    assert got[0] == ref[0] and got[3:6] == ref[3:6] and got[8:] == ref[8:]
    for g, r in zip(got[1:3] + got[6:8], ref[1:3] + ref[6:8]):
        assert g == pytest.approx(r, rel=1e-6, abs=1e-9)


@needs_kernel
@pytest.mark.parametrize("slope", [0.01, 0.3, 1.0, 3.0, 1e-40])
@pytest.mark.parametrize("rows,cols", [(1, 1), (100, 3), (7, 13), (33, 16), (5, 24), (64, 256)])
def test_fused_bias_leaky_relu_is_numpys_bit_for_bit_and_measures_z_and_a(kernel_on, rows, cols, slope):
    """slope=1e-40 (a float32 subnormal) makes every negative product underflow to -0.0: a's zero count."""
    from nnprobe.nn.activations import LeakyReLU

    rng = np.random.default_rng(rows * cols + 1)
    z0 = rng.standard_normal((rows, cols)).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    flat = z0.reshape(-1)
    flat[::5] = -np.resize(b, flat.size)[::5]
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 1e-45, -1e-45, -3e38], dtype=np.float32)
    k = min(flat.size, specials.size)
    flat[:k] = specials[:k] - b[np.arange(k) % cols]
    want_z = z0.copy()
    want_z += b
    with np.errstate(over="ignore", under="ignore"):
        want_a = LeakyReLU(slope).forward(want_z)  # the activation the model would otherwise run
    for measure in (False, True):
        z, a = z0.copy(), np.empty_like(z0)
        got = kernel_on.bias_relu(z, b, a, measure, slope)
        assert np.array_equal(z.view(np.int32), want_z.view(np.int32))
        assert np.array_equal(a.view(np.int32), want_a.view(np.int32))
        assert (got is None) == (not measure)
    # what it measured: z as a separate pass finds it, and a against NumPy on the a it wrote
    finite = z0.copy()
    finite.reshape(-1)[:k] = rng.standard_normal(k)
    finite.reshape(-1)[rows * cols // 2] = 0.0  # an exact zero in z
    z, a = finite.copy(), np.empty_like(finite)
    got = kernel_on.bias_relu(z, b, a, True, slope)
    ref = kernel_on.stats(z.reshape(-1), True, cols)
    assert len(got) == 13
    assert got[0] == ref[0] and got[3:5] == ref[3:5] and got[8] == ref[8] and got[10] == ref[10]
    for g, r in zip(got[1:3], ref[1:3]):
        assert g == pytest.approx(r, rel=1e-6, abs=1e-9)
    ad = a.astype(np.float64).reshape(-1)
    assert got[5] == int(np.count_nonzero(a == 0))
    assert got[6] == pytest.approx(ad.sum(), rel=1e-6, abs=1e-6 * np.abs(ad).sum())
    assert got[7] == pytest.approx(np.dot(ad, ad), rel=1e-6, abs=1e-30)
    assert (got[11], got[12]) == (float(a.min()), float(a.max()))


@needs_kernel
def test_fused_bias_leaky_relu_refuses_a_slope_it_cannot_order(kernel_on):
    z = np.ones((4, 3), dtype=np.float32)
    for slope in (0.0, -0.5, math.inf, math.nan):
        with pytest.raises(ValueError):
            kernel_on.bias_relu(z, np.ones(3, dtype=np.float32), np.empty_like(z), True, slope)
    with pytest.raises(TypeError):
        kernel_on.bias_relu(z, np.ones(3, dtype=np.float32), np.empty_like(z), True, "0.1")


@needs_kernel
@pytest.mark.parametrize("slope", [0.01, 0.0, 2.5, -0.5])
@pytest.mark.parametrize("n", SIZES)
def test_leaky_backprop_is_the_activations_vjp_bit_for_bit(kernel_on, n, slope):
    from nnprobe.nn.activations import LeakyReLU

    rng = np.random.default_rng(n)
    z = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32) * np.float32(1e30)  # g * 2.5 overflows now and then
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45], dtype=np.float32)
    k = min(n, specials.size)
    z[:k] = specials[:k]
    g[-k:] = specials[::-1][:k]  # NaN gradients beside finite z, and the other way round
    with np.errstate(all="ignore"):
        want = LeakyReLU(slope).vjp(z, None, g.copy())
    got = g.copy()
    assert kernel_on.leaky_backprop(z, got, slope) is None
    assert np.array_equal(got.view(np.int32), want.view(np.int32))


@needs_kernel
def test_leaky_backprop_rejects_what_it_cannot_do(kernel_on):
    z = np.ones(6, dtype=np.float32)
    with pytest.raises(ValueError):
        kernel_on.leaky_backprop(z, np.ones(5, dtype=np.float32), 0.1)
    with pytest.raises(ValueError):
        kernel_on.leaky_backprop(z, z, 0.1)
    with pytest.raises(TypeError):
        kernel_on.leaky_backprop(z, np.ones(6), 0.1)  # float64
    with pytest.raises(ValueError):  # read-only: the kernel writes g
        g = np.ones(6, dtype=np.float32)
        g.flags.writeable = False
        kernel_on.leaky_backprop(z, g, 0.1)


@needs_kernel
def test_fused_bias_relu_rejects_what_it_cannot_do(kernel_on):
    z = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError):
        kernel_on.bias_relu(z, np.ones(2, dtype=np.float32), np.empty_like(z))  # 12 entries would be 6 rows of 2: the shape says 3
    with pytest.raises(ValueError):
        kernel_on.bias_relu(z, np.ones(5, dtype=np.float32), np.empty_like(z))
    with pytest.raises(ValueError):
        kernel_on.bias_relu(z, np.ones(3, dtype=np.float32), z)  # a must not be z
    with pytest.raises(ValueError):
        kernel_on.bias_relu(z, np.ones(3, dtype=np.float32), np.empty((4, 4), dtype=np.float32))


@needs_kernel
@pytest.mark.parametrize("n", SIZES)
def test_fused_sgd_update_is_numpys_bit_for_bit_and_measures_the_new_norm(kernel_on, n):
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e3).astype(np.float32)
    g[n // 2] = 0.0
    want = p.copy()
    want += np.multiply(g, -0.0137)
    total, sq, n_, g_sq, g_min, g_max, g_zeros = kernel_on.axpy(p, g, -0.0137)
    assert np.array_equal(p.view(np.int32), want.view(np.int32))
    w = want.astype(np.float64)
    assert sq == pytest.approx(float(np.dot(w, w)), rel=1e-6)
    assert total == pytest.approx(float(w.sum()), rel=1e-6, abs=1e-6 * float(np.abs(w).sum()))
    start = (want - np.multiply(g, -0.0137)).astype(np.float32)
    again, expected = start.copy(), start.copy()
    expected += np.multiply(g, -0.0137)
    assert kernel_on.axpy(again, g, -0.0137, False) is None  # the update alone, for unprobed steps
    assert np.array_equal(again.view(np.int32), expected.view(np.int32))
    # the gradient's statistics, read in the same pass, are what stats(g) finds
    _, _, ss, mn, mx, zeros, _ = kernel_on.stats(g)
    assert (n_, g_min, g_max, g_zeros) == (n, mn, mx, zeros) and g_sq == pytest.approx(ss, rel=1e-6)


@needs_kernel
def test_sgd_reports_the_sums_of_squares_only_where_it_measured_them(kernel_on):
    params = [np.ones((3, 4), dtype=np.float32), np.ones(4, dtype=np.float64)]
    grads = [np.full((3, 4), 2.0, dtype=np.float32), np.full(4, 2.0)]
    opt = SGD(params, lr=0.5)
    norms = opt.step(grads, want_norms=True, grad_sqs=[48.0, 16.0])
    assert norms == pytest.approx([0.5 * math.sqrt(48.0), 0.5 * 4.0])
    assert opt.sqs_after[0] == 0.0 and opt.sqs_after[1] is None  # 1 - 0.5 * 2 = 0; float64 takes NumPy's path
    assert opt.sums_after[0] == 0.0 and opt.sums_after[1] is None
    assert np.all(params[0] == 0) and np.all(params[1] == 0)
    adam = make_optimizer(params, validate_config(_raw("adam"), source="test").optimizer)
    adam.step(grads)
    assert adam.sqs_after == [None, None]


def _raw(optimizer: str, activation: str = "relu") -> dict:
    return {"name": "kernel", "seed": 3,
            "data": {"source": "blobs", "n_samples": 300, "n_features": 20, "n_classes": 4},
            "model": {"hidden": [64, 32], "activation": activation, "output": "softmax", "dtype": "float32"},
            "loss": {"kind": "cross_entropy", "from_logits": True},
            "optimizer": {"kind": optimizer, "lr": 0.05},
            "training": {"steps": 12, "batch_size": 64}}


def _records(raw: dict, use: bool) -> list[dict]:
    was = kernel.in_use()
    kernel.use(use)
    try:
        cfg = validate_config(raw, source="test")
        trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(np.random.SeedSequence(cfg.seed))))
        batches = trainer.batches()
        with np.errstate(all="ignore"):
            return [trainer.step(s, next(batches)) for s in range(trainer.total_steps)]
    finally:
        kernel.use(was)


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-9), path
    else:
        assert a == b, path


@needs_kernel
@pytest.mark.parametrize("optimizer,activation", [("sgd", "relu"), ("sgd", "tanh"), ("sgd", "leaky_relu"),
                                                  ("adam", "relu"), ("adam", "leaky_relu")])
def test_a_run_is_the_same_with_the_kernel_on_and_off(optimizer, activation):
    on, off = _records(_raw(optimizer, activation), True), _records(_raw(optimizer, activation), False)
    # the update is NumPy's bit for bit, so the training itself is identical ...
    assert [r["loss"] for r in on] == [r["loss"] for r in off]
    # ... and every statistic agrees to within the rounding of its sums
    for a, b in zip(on, off):
        _close(a, b)

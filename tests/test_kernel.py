"""nnprobe/probes/_kernels.c: the one-pass statistics against NumPy, the named results the Python side
gives them, and the trainer's records with the kernel on and off (the same run: the kernel only reads)."""

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
    """The C module itself (its raw tuples), with the kernel switched on for the statistics."""
    was = kernel.in_use()
    kernel.use(True)
    yield kernel._kernels
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
    with pytest.raises(TypeError):
        kernel_on.vector_stats(np.ones(4))  # float64
    with pytest.raises(ValueError):
        kernel_on.vector_stats(np.ones((4, 4), dtype=np.float32)[:, :2])  # not contiguous


@needs_kernel
@pytest.mark.parametrize("n", SIZES)
def test_copy_and_difference_passes_against_numpy(kernel_on, n):
    """A weight's copy with its norm, and its update with the norm after it: what the recorder reads."""
    rng = np.random.default_rng(n + 7)
    w = (rng.standard_normal(n) * 10).astype(np.float32)
    copy = np.full(n, np.nan, dtype=np.float32)
    sq = kernel_on.copy_sumsq(w, copy)
    assert np.array_equal(copy, w)
    assert sq == pytest.approx(float(np.dot(w.astype(np.float64), w)), rel=1e-6)
    after = (w - np.float32(1e-3) * rng.standard_normal(n).astype(np.float32)).astype(np.float32)
    diff, norm = kernel_on.diff_sumsq(after, w)
    step = (after - w).astype(np.float64)  # the difference in float32, then widened: as the kernel takes it
    assert diff == pytest.approx(float(np.dot(step, step)), rel=1e-6)
    assert norm == pytest.approx(float(np.dot(after.astype(np.float64), after)), rel=1e-6)
    kept = w.copy()
    diff_c, norm_c, print_c = kernel_on.diff_copy(after, kept)  # the same sums, plus the copy and the fingerprint
    assert (diff_c, norm_c) == (diff, norm) and np.array_equal(kept, after)
    assert print_c == kernel_on.fingerprint(after)
    after[n // 2] = np.inf
    assert kernel_on.diff_sumsq(after, w)[1] == math.inf
    with pytest.raises(ValueError):
        kernel_on.diff_sumsq(w, w[:-1] if n > 1 else np.ones(2, dtype=np.float32))
    with pytest.raises(TypeError):
        kernel_on.copy_sumsq(w.astype(np.float64), copy)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_the_fingerprint_is_the_numpy_reference_for_every_size_and_dtype(kernel_on, dtype, n):
    from nnprobe.probes.changes import _numpy_fingerprint

    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert kernel_on.fingerprint(x) == _numpy_fingerprint(x)


@needs_kernel
@pytest.mark.parametrize("n", SIZES)
def test_vector_statistics_against_numpy(kernel_on, n):
    """The gradients' and parameters' pass: exact extremes and zeros, sums to within their rounding."""
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 1e3).astype(np.float32)
    g[n // 2] = 0.0
    d = g.astype(np.float64)
    n_, total, sq, g_min, g_max, zeros = kernel_on.vector_stats(g)
    assert (n_, g_min, g_max, zeros) == (n, float(g.min()), float(g.max()), int(np.count_nonzero(g == 0)))
    assert sq == pytest.approx(float(np.dot(d, d)), rel=1e-6)
    assert total == pytest.approx(float(d.sum()), rel=1e-6, abs=1e-6 * float(np.abs(d).sum()))
    # what stats(g) finds, in its own summation order
    _, _, ss, mn, mx, z, _ = kernel_on.stats(g)
    assert (mn, mx, z) == (g_min, g_max, zeros) and ss == pytest.approx(sq, rel=1e-6)
    bad = g.copy()
    bad[-1] = np.nan
    assert not math.isfinite(kernel_on.vector_stats(bad)[2])


@needs_kernel
def test_the_python_side_names_every_field(kernel_on):
    """kernel.active returns named results, field for field the C tuples (no positions to tell apart)."""
    x = np.array([[-1.0, 0.0, 2.0, 3.0], [0.5, -2.0, 0.0, 7.0]], dtype=np.float32)
    raw = kernel_on.stats(x, False, 4)
    m = kernel.active.moments(x, 4)
    assert tuple(m) == raw and (m.n, m.zeros, m.dead) == (8, 2, 1) and m.max == 7.0  # column 1: 0, -2
    raw = kernel_on.stats(x, True, 4, 2.5)
    s = kernel.active.signed(x, 4, 2.5)
    assert (s.n, s.total, s.sumsq, s.min, s.max, s.pos_sum, s.pos_sumsq, s.positives, s.saturated, s.dead) == \
        raw[:5] + raw[6:]
    assert (s.positives, s.saturated, s.pos_sum) == (4, 2, 12.5)  # |x| > 2.5: 3 and 7
    v = kernel.active.vector(x)
    assert tuple(v) == kernel_on.vector_stats(x) and v.zeros == 2


@needs_kernel
def test_parameter_sums_come_from_the_vector_pass_on_the_kernel_and_a_dot_product_otherwise(kernel_on):
    from nnprobe.probes import statistics as probes

    p = np.linspace(-1, 2, 300).astype(np.float32)
    got = probes.parameter_sums(p)
    _, total, sq, _, _, _ = kernel_on.vector_stats(p)
    assert got == (total, sq)
    assert probes.parameter_sums(p.astype(np.float64)) == (None, float(np.dot(p.astype(np.float64), p)))
    kernel.use(False)
    assert probes.parameter_sums(p) == (None, float(np.dot(p, p)))


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

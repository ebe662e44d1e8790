"""nnprobe.probes: every fused statistic against a naive NumPy reference computed in float64, for
float16/float32/float64, small and BLAS-sized tensors, non-finite entries, all-NaN tensors and
finite values whose sums overflow; then the trainer's records against the same references.

Every test runs twice: with the one-pass C kernel (float32, where it is built and the CPU has
AVX2) and with the NumPy passes only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.probes import kernel
from nnprobe.probes import statistics as probes
from nnprobe.nn.activations import HIDDEN, ReLU, hidden_activation, output_activation
from nnprobe.config import validate_config
from nnprobe.data import load_dataset
from nnprobe.nn.model import Dense
from nnprobe.nn.optim import SGD
from nnprobe.train.loop import Trainer

DTYPES = ["float16", "float32", "float64"]
# (rows, units): the Python path (<= 32 entries), NumPy reductions, and the GEMV paths (narrow and wide)
# (33, 37): the kernel's 256-entry blocks, its 8-lane loop and a scalar tail all in one tensor
SHAPES = [(3, 1), (4, 8), (100, 3), (33, 37), (256, 10), (256, 64), (64, 300)]
# relative tolerance against the float64 reference: BLAS sums in float32 along a row, then float64
RTOL = {"float16": 2e-5, "float32": 2e-5, "float64": 1e-12}

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow / invalid in the references


@pytest.fixture(autouse=True, params=["kernel", "numpy"])
def stats_path(request):
    """Run the test on the C kernel's path, then on NumPy's."""
    was = kernel.in_use()
    if not kernel.use(request.param == "kernel"):
        if request.param == "kernel":
            kernel.use(was)
            pytest.skip("the C kernel is not built here or the CPU lacks AVX2")
    yield request.param
    kernel.use(was)


# ---------------------------------------------------------------- naive references (float64, finite entries)


def ref_stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    counts = {"nan": int(np.isnan(x).sum()), "posinf": int((x == np.inf).sum()), "neginf": int((x == -np.inf).sum())}
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, **counts}
    big = float(np.abs(finite).max())
    scale = big if big > 1e150 else 1.0  # so that the reference itself cannot overflow
    return {"mean": float(np.mean(finite / scale)) * scale, "std": float(np.std(finite / scale)) * scale,
            "min": float(finite.min()), "max": float(finite.max()), **counts}


def ref_norm(x: np.ndarray):
    x = np.asarray(x, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return None
    scale = float(np.abs(finite).max()) or 1.0
    return float(np.sqrt(np.sum((finite / scale) ** 2))) * scale


def ref_dead(z: np.ndarray) -> int:
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero(np.asarray(z, dtype=np.float64).max(axis=0) <= 0))


def scale_of(x: np.ndarray) -> float:
    finite = np.asarray(x, dtype=np.float64)[np.isfinite(np.asarray(x, dtype=np.float64))]
    return float(np.abs(finite).max()) if finite.size else 1.0


def check_moments(got: dict, ref: dict, x: np.ndarray, dtype: str, keys=("mean", "std", "min", "max")) -> None:
    """Exact counts, exact min/max, mean/std within RTOL of the tensor's scale (the error of a float sum)."""
    for k in ("nan", "posinf", "neginf"):
        if k in got:
            assert got[k] == ref[k], k
    for k in keys:
        if ref[k] is None:
            assert got[k] is None, k
            continue
        assert isinstance(got[k], float), (k, type(got[k]))
        if k in ("min", "max"):
            assert got[k] == ref[k], k
        elif k == "std":
            assert got[k] == pytest.approx(ref[k], rel=RTOL[dtype], abs=1e-300), k
        else:
            assert abs(got[k] - ref[k]) <= RTOL[dtype] * max(abs(ref[k]), scale_of(x)), (k, got[k], ref[k])


def sample(rng: np.random.Generator, shape, dtype: str, kind: str) -> np.ndarray:
    n = int(np.prod(shape))
    if kind == "normal":
        x = rng.standard_normal(n)
    elif kind == "offset":  # |mean| >> std: E[x^2] - mean^2 cancels
        x = 1000.0 + 0.01 * rng.standard_normal(n)
    elif kind == "zeros":  # a ReLU's output: about half exact zeros
        x = np.maximum(rng.standard_normal(n), 0)
    elif kind == "integers":  # ties for min/max and exact zeros
        x = rng.integers(-3, 4, n).astype(np.float64)
    else:
        raise ValueError(kind)
    return x.astype(dtype).reshape(shape)


KINDS = ["normal", "offset", "zeros", "integers"]


# ---------------------------------------------------------------- one tensor


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("kind", KINDS)
def test_tensor_stats_match_the_naive_reference(dtype, shape, kind):
    x = sample(np.random.default_rng(0), shape, dtype, kind)
    got = probes.tensor_stats(x)
    assert set(got) == {"mean", "std", "min", "max", "nan", "posinf", "neginf"}
    check_moments(got, ref_stats(x), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
def test_one_dimensional_tensors(dtype, shape):
    x = sample(np.random.default_rng(1), shape, dtype, "normal").ravel()
    check_moments(probes.tensor_stats(x), ref_stats(x), x, dtype)
    assert probes.bias_stats(x)["norm"] == pytest.approx(ref_norm(x), rel=RTOL[dtype])
    assert probes.bias_stats(x)["mean"] == pytest.approx(ref_stats(x)["mean"], rel=RTOL[dtype], abs=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("where", ["nan", "posinf", "neginf", "mixed"])
def test_non_finite_entries_are_counted_and_the_rest_summarised(dtype, shape, where):
    rng = np.random.default_rng(2)
    x = sample(rng, shape, dtype, "normal")
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, size=max(1, flat.size // 5), replace=False)
    values = {"nan": [np.nan], "posinf": [np.inf], "neginf": [-np.inf], "mixed": [np.nan, np.inf, -np.inf]}[where]
    flat[spots] = np.resize(values, spots.size)
    ref = ref_stats(x)
    check_moments(probes.tensor_stats(x), ref, x, dtype)
    bad = ref["nan"] + ref["posinf"] + ref["neginf"]
    g = probes.gradient_stats(x, with_zero_frac=True)
    assert g["nonfinite"] == bad
    assert g["norm"] == pytest.approx(ref_norm(x), rel=RTOL[dtype])
    assert g["maxabs"] == max(abs(ref["min"]), abs(ref["max"]))
    w = probes.weight_stats(x)
    assert w["nonfinite"] == bad
    assert w["norm"] == pytest.approx(ref_norm(x), rel=RTOL[dtype])
    check_moments(w, ref, x, dtype)
    assert w["pos_frac"] == np.count_nonzero(x > 0) / x.size
    assert probes.is_finite(x) is False
    assert not math.isfinite(probes.sq_norm(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf], ids=["nan", "posinf", "neginf"])
def test_tensors_with_no_finite_entry(dtype, shape, fill):
    x = np.full(shape, fill, dtype=dtype)
    st = probes.tensor_stats(x)
    assert st["mean"] is st["std"] is st["min"] is st["max"] is None
    assert (st["nan"], st["posinf"], st["neginf"]) == tuple(x.size * (k == fill or (k != k and fill != fill))
                                                           for k in (np.nan, np.inf, -np.inf))
    g = probes.gradient_stats(x, with_zero_frac=True)
    assert g == {"norm": None, "maxabs": None, "nonfinite": x.size, "zero_frac": 0.0}
    w = probes.weight_stats(x)
    assert w["norm"] is w["mean"] is w["std"] is w["min"] is w["max"] is None
    assert w["nonfinite"] == x.size and w["pos_frac"] == (1.0 if fill == np.inf else 0.0)
    assert probes.bias_stats(x) == {"norm": None, "mean": None}
    z_stats, a_stats = probes.forward_stats(x, np.maximum(x, 0), "relu", None)
    check_moments(z_stats, ref_stats(x), x, dtype)
    check_moments(a_stats, ref_stats(np.maximum(x, 0)), x, dtype)
    assert a_stats["dead"] == ref_dead(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
def test_finite_values_whose_sums_overflow(dtype, shape):
    """Entries near the dtype's maximum: their sum of squares is inf, yet every entry is finite."""
    big = float(np.finfo(dtype).max) / 2
    rng = np.random.default_rng(3)
    x = (big * rng.uniform(0.5, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)
    ref = ref_stats(x)
    assert probes.is_finite(x) is True
    st = probes.tensor_stats(x)
    check_moments(st, ref, x, "float64" if dtype == "float64" else dtype)
    g = probes.gradient_stats(x, with_zero_frac=True)
    assert g["nonfinite"] == 0 and g["norm"] == pytest.approx(ref_norm(x), rel=1e-6)
    assert g["maxabs"] == float(np.abs(x.astype(np.float64)).max())
    w = probes.weight_stats(x)
    assert w["nonfinite"] == 0 and w["norm"] == pytest.approx(ref_norm(x), rel=1e-6)
    b = probes.bias_stats(x.ravel())
    assert b["norm"] == pytest.approx(ref_norm(x), rel=1e-6)
    assert b["mean"] == pytest.approx(ref["mean"], rel=1e-6, abs=1e-6 * big)
    same_sign = np.abs(x)
    assert probes.tensor_stats(same_sign)["mean"] == pytest.approx(ref_stats(same_sign)["mean"], rel=1e-6)


def test_empty_tensors():
    x = np.zeros((0, 4), dtype=np.float32)
    assert probes.tensor_stats(x)["mean"] is None
    assert probes.is_finite(x) is True and probes.sq_norm(x) == 0.0
    assert probes.gradient_stats(x, with_zero_frac=True)["norm"] == 0.0
    assert probes.bias_stats(x) == {"norm": None, "mean": None}


# ---------------------------------------------------------------- gradients, weights, biases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_weight_and_bias_stats(dtype, shape, kind):
    x = sample(np.random.default_rng(4), shape, dtype, kind)
    x64 = x.astype(np.float64)
    for sq in (None, probes.sq_norm(x)):
        g = probes.gradient_stats(x, with_zero_frac=True, sq=sq)
        assert set(g) == {"norm", "maxabs", "nonfinite", "zero_frac"}
        assert g["norm"] == pytest.approx(float(np.linalg.norm(x64)), rel=RTOL[dtype])
        assert g["maxabs"] == float(np.abs(x64).max())
        assert g["nonfinite"] == 0
        assert g["zero_frac"] == np.count_nonzero(x64 == 0) / x.size
    assert set(probes.gradient_stats(x, with_zero_frac=False)) == {"norm", "maxabs", "nonfinite"}
    w = probes.weight_stats(x)
    assert list(w) == ["norm", "mean", "std", "min", "max", "pos_frac", "nonfinite"]
    assert w["norm"] == pytest.approx(float(np.linalg.norm(x64)), rel=RTOL[dtype])
    check_moments(w, ref_stats(x), x, dtype)
    assert w["pos_frac"] == np.count_nonzero(x64 > 0) / x.size and w["nonfinite"] == 0
    b = probes.bias_stats(x.ravel())
    assert list(b) == ["norm", "mean"]
    assert b["norm"] == pytest.approx(float(np.linalg.norm(x64)), rel=RTOL[dtype])
    assert abs(b["mean"] - x64.mean()) <= RTOL[dtype] * scale_of(x)


def test_signed_zeros_count_as_zero_and_maxabs_is_never_negative_zero():
    x = np.array([[0.0, -0.0], [-0.0, 0.0]] * 20, dtype=np.float32)
    g = probes.gradient_stats(x, with_zero_frac=True)
    assert g["zero_frac"] == 1.0 and g["norm"] == 0.0
    assert math.copysign(1.0, g["maxabs"]) == 1.0
    w = probes.weight_stats(x)
    assert w["pos_frac"] == 0.0 and w["std"] == 0.0 and w["mean"] == 0.0
    small = np.array([-0.0, 0.0, -0.0], dtype=np.float64)
    assert math.copysign(1.0, probes.gradient_stats(small, with_zero_frac=True)["maxabs"]) == 1.0


# ---------------------------------------------------------------- a layer's forward tensors


ACTIVATION_CASES = sorted(HIDDEN) + ["sigmoid-saturated", "tanh-saturated"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
@pytest.mark.parametrize("name", ACTIVATION_CASES)
def test_forward_stats_match_the_naive_reference(dtype, shape, name):
    base = name.split("-")[0]
    act = HIDDEN[base]()
    rng = np.random.default_rng(5)
    z = sample(rng, shape, dtype, "normal")
    if name.endswith("saturated"):
        z = (z.astype(np.float64) * 8).astype(dtype)
    if shape[1] > 2:  # dead units: a column <= 0 everywhere, one with exact and negative zeros
        z[:, 0] = -np.abs(z[:, 0])
        z[:, 1] = np.where(np.arange(shape[0]) % 2, -0.0, 0.0)
    a = act.forward(z)
    kind = "relu" if type(act) is ReLU else "identity" if base == "identity" else "other"
    z_stats, a_stats = probes.forward_stats(z, a, kind, act.saturation)
    assert list(z_stats) == ["mean", "std", "min", "max", "nan", "posinf", "neginf", "sat_frac"]
    assert list(a_stats) == ["mean", "std", "min", "max", "nan", "posinf", "neginf", "zero_frac", "dead"]
    check_moments(z_stats, ref_stats(z), z, dtype)
    check_moments(a_stats, ref_stats(a), a, dtype)
    z64 = z.astype(np.float64)
    if act.saturation is None:
        assert z_stats["sat_frac"] is None
    else:
        assert z_stats["sat_frac"] == np.count_nonzero(np.abs(z64) > act.saturation) / z.size
    assert a_stats["zero_frac"] == np.count_nonzero(a.astype(np.float64) == 0) / a.size
    assert a_stats["dead"] == ref_dead(z)
    # the generic path (every tensor on its own) agrees with the shared one
    z_alone, dead = probes.preactivation_stats(z, act.saturation)
    assert dead == a_stats["dead"]
    assert list(z_alone) == list(z_stats)
    for k, v in z_alone.items():
        assert v == z_stats[k] if v is None or k in ("min", "max") else v == pytest.approx(z_stats[k], rel=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_stats_with_non_finite_pre_activations(dtype):
    rng = np.random.default_rng(6)
    z = sample(rng, (64, 40), dtype, "normal")
    z[3, 5], z[7, 6], z[9, 7] = np.nan, np.inf, -np.inf
    z[:, 8] = -1.0
    z[0, 8] = np.nan  # a NaN column maximum is not <= 0: not dead
    z[:, 9] = -1.0
    z[0, 9] = -np.inf  # still dead
    a = ReLU().forward(z)
    z_stats, a_stats = probes.forward_stats(z, a, "relu", None)
    check_moments(z_stats, ref_stats(z), z, dtype)
    check_moments(a_stats, ref_stats(a), a, dtype)
    assert (a_stats["nan"], a_stats["posinf"], a_stats["neginf"]) == (2, 1, 0)
    assert a_stats["dead"] == ref_dead(z)
    assert a_stats["zero_frac"] == np.count_nonzero(a == 0) / a.size


def test_dead_unit_with_one_subnormal_positive_pre_activation_is_alive():
    z = np.full((64, 80), -1.0, dtype=np.float32)
    z[17, 3] = np.float32(1e-45)  # the smallest float32 subnormal
    a = ReLU().forward(z)
    for kind in ("relu", "other"):
        _, a_stats = probes.forward_stats(z, a, kind, None)
        assert a_stats["dead"] == 79
    z_narrow = z[:, :10].copy()
    _, dead = probes.preactivation_stats(z_narrow, None)
    assert dead == 9


def test_identity_activation_shares_the_pre_activation_statistics():
    z = sample(np.random.default_rng(7), (128, 16), "float32", "zeros")
    z_stats, a_stats = probes.forward_stats(z, z, "identity", None)
    for k in ("mean", "std", "min", "max", "nan", "posinf", "neginf"):
        assert a_stats[k] == z_stats[k]
    assert a_stats["zero_frac"] == np.count_nonzero(z == 0) / z.size
    assert a_stats["dead"] == ref_dead(z)


# ---------------------------------------------------------------- the step's fast paths against their plain forms


@pytest.mark.parametrize("shape", [(64, 48), (128, 64)], ids=["np.where-sized", "bit-mask-sized"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backprop_is_np_where_bit_for_bit(dtype, shape):
    rng = np.random.default_rng(8)
    z = sample(rng, shape, dtype, "normal")
    g = sample(rng, shape, dtype, "normal")
    z[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0]
    g[0, :6] = [1.0, np.nan, np.inf, -np.inf, np.nan, -0.0]
    g[1, :4] = -0.0
    z[1, :4] = [-1.0, 1.0, 0.0, np.nan]
    expected = np.where(z > 0, g, 0)
    given = g.copy()
    got = ReLU().vjp(z, np.maximum(z, 0), given)
    bits = {"float16": np.int16, "float32": np.int32, "float64": np.int64}[dtype]
    np.testing.assert_array_equal(got.view(bits), expected.view(bits))
    np.testing.assert_array_equal(given.view(bits), g.view(bits))  # the incoming gradient is left alone


def test_sgd_update_norm_from_the_gradient_norm_matches_the_update():
    rng = np.random.default_rng(9)
    p = [rng.standard_normal((30, 20)).astype(np.float32), rng.standard_normal(20)]
    g = [rng.standard_normal((30, 20)).astype(np.float32), rng.standard_normal(20)]
    before = [x.copy() for x in p]
    norms = SGD(p, 0.01).step(g, grad_sqs=[probes.sq_norm(x) for x in g])
    for n, after, b, x in zip(norms, p, before, g):
        np.testing.assert_array_equal(after, b + x * -0.01)
        assert n == pytest.approx(float(np.linalg.norm((after - b).astype(np.float64))), rel=1e-5)


# ---------------------------------------------------------------- the trainer's records


def trainer_config(**over):
    raw = {"data": {"source": "blobs", "n_samples": 96, "n_features": 5, "n_classes": 3},
           "model": {"hidden": [40, 24], "activation": "relu", "output": "softmax", "init": "he_normal",
                     "dtype": "float32"},
           "loss": {"kind": "cross_entropy", "from_logits": True},
           "optimizer": {"kind": "sgd", "lr": 0.05}, "training": {"steps": 7}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_config(raw, source="test")


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_step_records_match_naive_statistics_of_the_same_arrays(activation, every, optimizer):
    """Every full record against references computed from copies taken around the step (W before the update)."""
    cfg = trainer_config(model={"activation": activation}, probes={"every": every},
                         optimizer={"kind": optimizer})
    trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(0)))
    layers = trainer.model.layers
    with np.errstate(all="ignore"):
        for step in range(trainer.total_steps):
            W = [l.W.copy() for l in layers]
            b = [l.b.copy() for l in layers]
            record = trainer.step(step, None)
            assert record["full"] == (step % every == 0 or step == trainer.total_steps - 1)
            if not record["full"]:
                assert "layers" not in record
                continue
            for i, (layer, st) in enumerate(zip(layers, record["layers"])):
                check_moments(st["z"], ref_stats(layer.z), layer.z, "float32")
                check_moments(st["a"], ref_stats(layer.a), layer.a, "float32")
                assert st["a"]["dead"] == ref_dead(layer.z)
                assert st["a"]["zero_frac"] == np.count_nonzero(layer.a == 0) / layer.a.size
                assert st["W"]["norm"] == pytest.approx(float(np.linalg.norm(W[i].astype(np.float64))), rel=2e-5)
                assert st["W"]["nonfinite"] == 0
                if step == 0:  # the weight distribution is recorded for the initial weights only
                    check_moments(st["W"], ref_stats(W[i]), W[i], "float32")
                    assert st["W"]["pos_frac"] == np.count_nonzero(W[i] > 0) / W[i].size
                else:
                    assert set(st["W"]) == {"norm", "nonfinite"}
                assert st["b"]["norm"] == pytest.approx(float(np.linalg.norm(b[i].astype(np.float64))), rel=2e-5,
                                                        abs=1e-30)
                delta = (layer.W.astype(np.float64) - W[i])
                expected_ratio = float(np.linalg.norm(delta) / np.linalg.norm(W[i].astype(np.float64)))
                assert st["update_ratio"] == pytest.approx(expected_ratio, rel=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("every", [1, 2])
def test_an_update_that_overflows_is_caught_although_w_is_not_reread_every_step(dtype, every):
    """Each parameter is read once after its update (the next record's norm comes from that read); a huge
    lr must be caught in the update pass, at the step it happens, on full and light steps alike."""
    lr = {"float32": 1e36, "float64": 1e306}[dtype]
    raw = {"data": {"source": "affine", "n_samples": 10}, "model": {"hidden": [2], "dtype": dtype},
           "optimizer": {"lr": lr}, "training": {"steps": 4}, "probes": {"every": every}}
    cfg = validate_config(raw, source="test")
    trainer = Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(0)))
    with np.errstate(all="ignore"):
        for step in range(trainer.total_steps):
            record = trainer.step(step, None)
            params_finite = all(np.isfinite(p).all() for p in trainer.model.params())
            if record["nonfinite"] is not None:
                break
            assert params_finite, step
    assert record["nonfinite"]["pass"] == "update"
    assert not params_finite


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_weight_norm_stats_against_numpy(dtype):
    """The every-step weight record: the norm of the finite entries and the count of the others."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((40, 30)).astype(dtype)
    st = probes.weight_norm_stats(W)
    assert st == {"norm": pytest.approx(float(np.linalg.norm(W.astype(np.float64))), rel=1e-3 if dtype == "float16" else 2e-5),
                  "nonfinite": 0}
    W[3, 4], W[7, 1] = np.nan, np.inf
    bad = probes.weight_norm_stats(W)
    finite = W[np.isfinite(W)].astype(np.float64)
    assert bad["nonfinite"] == 2
    assert bad["norm"] == pytest.approx(float(np.linalg.norm(finite)), rel=1e-3 if dtype == "float16" else 1e-6)
    assert probes.weight_norm_stats(np.full((3, 3), np.nan, dtype=dtype)) == {"norm": None, "nonfinite": 9}


@pytest.mark.parametrize("kind", ["normal", "offset"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity"])
@pytest.mark.parametrize("shape", [(100, 3), (33, 37), (64, 300)], ids=["100x3", "33x37", "64x300"])
def test_a_layers_own_forward_pass_gives_the_reference_statistics(activation, shape, kind):
    """Dense.forward as a probed step runs it, then the layer's statistics as the trainer takes them;
    'offset' (|mean| >> std) makes the std take its float64 re-read."""
    rng = np.random.default_rng(11)
    rows, units = shape
    x = sample(rng, (rows, 4), "float32", "normal")
    W = sample(rng, (4, units), "float32", "normal") * np.float32(0.01)
    b = sample(rng, (units,), "float32", kind).reshape(units) + np.float32(0.5)  # z inherits b's offset
    act = output_activation("identity") if activation == "identity" else hidden_activation(activation)
    layer = Dense("dense1", W, b, act, activation)
    layer.forward(x)
    stat_kind = "relu" if activation == "relu" else activation if activation == "identity" else "other"
    z_stats, a_stats = probes.forward_stats(layer.z, layer.a, stat_kind, act.saturation)
    check_moments(z_stats, ref_stats(layer.z), layer.z, "float32")
    check_moments(a_stats, ref_stats(layer.a), layer.a, "float32")
    assert a_stats["zero_frac"] == np.count_nonzero(layer.a == 0) / layer.a.size
    assert a_stats["dead"] == ref_dead(layer.z)


PROBABILITIES = {
    "softmax rows": np.random.default_rng(4).dirichlet(np.ones(10), size=64),
    "exact 0 and 1": np.array([0.0, 1.0, 0.5, 0.25]),
    "a ReLU output above 1": np.array([0.0, 3.5, 0.2, 1.0, 0.0]),
    "negative": np.array([-0.25, 0.5, 0.75]),
    "NaN": np.array([0.0, 1.0, 0.5, 2.0, -1.0, np.nan]),
    "inf": np.array([np.inf, 0.0, 1.0]),
    "-inf": np.array([-np.inf, 0.3]),
}


@pytest.mark.parametrize("use_kernel", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(PROBABILITIES))
def test_probability_counts_against_numpy(case, dtype, use_kernel):
    """The counts the log-zero detector reads are exact, whichever shortcut the extremes allow."""
    was = kernel.in_use()
    kernel.use(use_kernel)
    try:
        p = PROBABILITIES[case].astype(dtype)
        with np.errstate(all="ignore"):
            got = probes.probability_stats(p, 0.0, False)
    finally:
        kernel.use(was)
    assert got["n"] == p.size and got["n_zero"] == int(np.sum(p == 0)) and got["n_one"] == int(np.sum(p == 1))
    assert got["n_outside"] == int(np.sum((p < 0) | (p > 1)))
    if np.isfinite(p).all():
        assert (got["min"], got["max"]) == (float(p.min()), float(p.max()))
